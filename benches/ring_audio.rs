//! AudioRing throughput: the same ring between two processes and between two threads,
//! against rtrb moving the same blocks between two threads, against a plain memcpy of
//! the same bytes — stereo f32 blocks of 64 to 1024 frames.
//!
//! Every variant moves blocks from a producer that owns one source block to a consumer
//! that copies each block out into its own buffer: one copy in, one copy out, which is
//! what the engine and a worker do. A run pushes `n` blocks (spinning while the ring is
//! full) and ends when the producer sees the ring drained; its time gives blocks/s and
//! GB/s of sample payload. `memcpy` copies the same block `n` times into a rotation of
//! 16 buffers on one thread (one copy per block, no second core): the cost of the bytes.
//!
//! Before anything is timed, each variant's data is checked: the ring variants echo
//! blocks with distinct contents back through the region's audio-out ring (so the child
//! process really moves them both ways) and every sample and tag is compared; rtrb's
//! consumer compares every sample of every block it receives. During timed runs the
//! ring consumer still checks that cycle tags arrive in order.
//!
//! Then criterion measures each variant (its mean and interval), and an interleaved loop
//! (A B C D, D C B A, ...) measures all four side by side and prints medians and the
//! per-round ratios. In each round every variant's source and destination buffers sit
//! at the same page offsets, which rotate from round to round over eight offsets
//! ([`Place::for_round`]): a caller's buffers land anywhere in a page, and copy speed
//! depends on where, so one fixed placement would measure one arbitrary case. The ratios
//! are also printed per offset. `SLOTPOOL_BENCH_PAGE_ALIGNED=1` keeps every buffer
//! page-aligned instead. `cargo test --benches` runs everything once, tiny.

#[allow(dead_code)] // shared by all bench binaries; each uses a subset
mod common;

use std::hint::black_box;
use std::process::{self, Child};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::control::{self, check_peer, handshake, serve, stop_requested};
use common::{
    Backoff, RunMode, Side, Tries, median, paired_ratio, print_machine, print_table, si, spin_until,
};
use criterion::{BenchmarkId, Criterion, Throughput};
use slotpool_ring::{HostEnd, HostRegion, Monitor, PushError, SlotLayout, WorkerEnd, WorkerRegion};

const CHANNELS: u32 = 2;
/// Blocks per ring, for every ring variant (rtrb gets the same number of blocks).
const CAPACITY: u32 = 16;
/// Block sizes of the table; 128 and 512 are there for the neighbour check.
const FRAMES: [u32; 5] = [64, 128, 256, 512, 1024];
/// Peer role name and the environment variable carrying its parameters.
const ROLE: &str = "audio-sink";
const VERIFY_ENV: &str = "SLOTPOOL_BENCH_VERIFY";
/// Interleaved rounds per block size (each: one ~2 ms run of every variant).
const ROUNDS: usize = 151;

fn layout(frames: u32) -> SlotLayout {
    common::audio_layout(CHANNELS, frames, CAPACITY)
}

fn block_bytes(frames: u32) -> usize {
    frames as usize * CHANNELS as usize * 4
}

/// Sample `i` of the verification block tagged `cycle`: distinct per block and sample,
/// exactly representable (below 2^24).
fn pattern(cycle: u64, i: usize) -> f32 {
    ((cycle % 4096) * 4096 + (i % 4096) as u64) as f32
}

fn fill_pattern(block: &mut [f32], cycle: u64) {
    for (i, s) in block.iter_mut().enumerate() {
        *s = pattern(cycle, i);
    }
}

fn check_pattern(block: &[f32], cycle: u64) -> Result<(), String> {
    match block
        .iter()
        .enumerate()
        .find(|(i, s)| **s != pattern(cycle, *i))
    {
        None => Ok(()),
        Some((i, s)) => Err(format!(
            "data: block {cycle} sample {i} is {s}, expected {}",
            pattern(cycle, i)
        )),
    }
}

/// A block of f32 samples at a chosen offset in a page ([`PageBlock::place`]; a page
/// boundary at first). In every round all variants copy from and into buffers at the
/// same page offsets, so none of them wins or loses by where the allocator happened to
/// put its buffers (copy speed depends on the source and destination offsets, see
/// `memcpy_alias`).
struct PageBlock {
    store: Vec<f32>,
    /// Index of the first sample on a page boundary.
    page: usize,
    start: usize,
    len: usize,
}

impl PageBlock {
    fn new(len: usize, value: f32) -> PageBlock {
        // Room to align to a page (1024 f32) and to move up to one more page.
        let store = vec![value; len + 2048];
        let page = (4096 - store.as_ptr() as usize % 4096) % 4096 / 4;
        PageBlock {
            store,
            page,
            start: page,
            len,
        }
    }

    /// Moves the block to byte `offset` (a multiple of 4 below 4096) of its page; the
    /// samples now in the window are whatever the store held there.
    fn place(&mut self, offset: u32) {
        debug_assert!(offset < 4096 && offset.is_multiple_of(4));
        self.start = self.page + offset as usize / 4;
    }
}

/// The page offsets of the caller's buffers for one run: where the producer's source
/// block and the consumer's destination block start in their pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Place {
    src: u32,
    dst: u32,
}

/// Page offsets the interleaved rounds rotate through: eight spread over the page, on
/// cache-line boundaries (576 = 9 lines apart, modulo 4096).
const OFFSETS: [u32; 8] = [0, 576, 1152, 1728, 2304, 2880, 3456, 4032];

impl Place {
    /// Round `r`'s placement: the source offset steps every round and the destination
    /// every eighth, so 64 rounds cover every pair. `SLOTPOOL_BENCH_PAGE_ALIGNED=1`
    /// keeps both on a page boundary (the method before 2026-12-06).
    fn for_round(r: usize) -> Place {
        if page_aligned_only() {
            return Place::default();
        }
        Place {
            src: OFFSETS[r % OFFSETS.len()],
            dst: OFFSETS[(r / OFFSETS.len()) % OFFSETS.len()],
        }
    }
}

fn page_aligned_only() -> bool {
    std::env::var_os("SLOTPOOL_BENCH_PAGE_ALIGNED").is_some_and(|v| v == "1")
}

impl std::ops::Deref for PageBlock {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.store[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for PageBlock {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.store[self.start..self.start + self.len]
    }
}

// ---------------------------------------------------------------- the ring's peer

/// The consumer of the ring variants, in a thread or in a child process: first echoes
/// `verify` blocks back through audio-out unchanged, then serves timed runs, popping
/// every block into its own buffer and checking that cycle tags arrive in order.
fn ring_peer(mut end: WorkerEnd, verify: u64) -> Result<(), String> {
    let mut buf = PageBlock::new(end.audio_in.block_samples(), 0.0);
    let mut backoff = Backoff::default();
    let mut echoed = 0;
    let started = Instant::now();
    while echoed < verify {
        match end.audio_in.pop(&mut buf).map_err(|e| e.to_string())? {
            Some(cycle) => {
                while let Err(e) = end.audio_out.push(cycle, &buf) {
                    match e {
                        PushError::Full => backoff.snooze(),
                        e => return Err(e.to_string()),
                    }
                }
                echoed += 1;
            }
            None if started.elapsed() > common::PEER_TIMEOUT => {
                return Err("no blocks to echo".into());
            }
            None => backoff.snooze(),
        }
    }
    let mut next: Option<u64> = None;
    serve(&mut end, |end, dst| {
        buf.place(dst);
        loop {
            match end.audio_in.pop(&mut buf).map_err(|e| e.to_string())? {
                Some(cycle) => {
                    if next.is_some_and(|n| n != cycle) {
                        return Err(format!("data: got block {cycle}, expected {next:?}"));
                    }
                    next = Some(cycle + 1);
                    black_box(&mut buf);
                }
                None => {
                    if stop_requested(end)? {
                        return Ok(());
                    }
                    backoff.snooze();
                }
            }
        }
    })
}

/// Entry of the child process (`ROLE`).
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
            eprintln!("ring_audio peer: {e}");
            process::exit(1);
        }
    }
}

// ---------------------------------------------------------------- variants

enum Peer {
    Process(Child),
    Thread(JoinHandle<Result<(), String>>),
}

/// One slot region, its host end, and a consumer peer in another process or thread.
struct RingRig {
    what: String,
    host: HostEnd,
    monitor: Monitor,
    peer: Option<Peer>,
    block: PageBlock,
    next_cycle: u64,
    // Declared last: dropped after the ends that map it.
    _region: HostRegion,
}

impl RingRig {
    fn start(frames: u32, cross_process: bool, verify: u64) -> RingRig {
        let what = format!(
            "ring {} {frames}f",
            if cross_process { "xproc" } else { "threads" }
        );
        let region = HostRegion::create(&format!("bench:{frames}"), layout(frames))
            .unwrap_or_else(|e| panic!("{what}: creating the region: {e}"));
        let host = region
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
        let samples = layout(frames).input_samples();
        let mut rig = RingRig {
            what,
            host,
            monitor,
            peer: Some(peer),
            block: PageBlock::new(samples, 0.25),
            next_cycle: 0,
            _region: region,
        };
        rig.verify(verify);
        rig
    }

    /// Sends `n` distinct blocks through the peer and back; checks every sample and tag.
    fn verify(&mut self, n: u64) {
        let samples = self.block.len();
        let (mut block, mut back) = (vec![0.0f32; samples], vec![0.0f32; samples]);
        let (mut sent, mut received) = (0u64, 0u64);
        let what = self.what.clone();
        spin_until(&what, || {
            if sent < n {
                fill_pattern(&mut block, sent);
                match self.host.audio_in.push(sent, &block) {
                    Ok(()) => sent += 1,
                    Err(PushError::Full) => {}
                    Err(e) => panic!("{what}: verify push: {e}"),
                }
            }
            match self.host.audio_out.pop(&mut back) {
                Ok(Some(cycle)) => {
                    assert_eq!(cycle, received, "{what}: echoed blocks out of order");
                    if let Err(e) = check_pattern(&back, cycle) {
                        panic!("{what}: {e}");
                    }
                    received += 1;
                }
                Ok(None) => check_peer(&self.monitor, &what),
                Err(e) => panic!("{what}: verify pop: {e}"),
            }
            received == n
        });
        self.next_cycle = n;
    }

    /// Pushes `n` blocks and waits until the peer has consumed them all: the timed part.
    fn transfer(&mut self, n: u64) -> Duration {
        let (producer, block, what) = (&mut self.host.audio_in, &self.block, &self.what);
        let mut tries = Tries::default();
        let t0 = Instant::now();
        for _ in 0..n {
            loop {
                match producer.push(self.next_cycle, block) {
                    Ok(()) => break,
                    Err(PushError::Full) => tries.again(what),
                    Err(e) => panic!("{what}: push: {e}"),
                }
            }
            tries.done();
            self.next_cycle += 1;
        }
        spin_until(what, || {
            producer
                .free_slots()
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                == CAPACITY
        });
        t0.elapsed()
    }

    /// Wakes the peer, warms up, times `n` blocks, lets the peer sleep again.
    fn run(&mut self, n: u64, place: Place) -> Duration {
        self.block.place(place.src);
        let token = control::run_token(place.dst);
        handshake(&mut self.host, &self.monitor, token, &self.what);
        common::warm_up(|| self.transfer(CAPACITY as u64));
        let elapsed = self.transfer(n);
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

/// rtrb of f32 samples, `CAPACITY` blocks deep, between two threads; whole blocks go in
/// with `push_entire_slice` and come out with `pop_entire_slice`.
struct RtrbRig {
    producer: rtrb::Producer<f32>,
    shared: Arc<RtrbShared>,
    consumer: Option<JoinHandle<()>>,
    block: PageBlock,
}

#[derive(Default)]
struct RtrbShared {
    /// Set by the bench for a run; the consumer spins while it is set or data remain.
    running: AtomicBool,
    /// Set by the consumer while it serves a run (the handshake).
    active: AtomicBool,
    shutdown: AtomicBool,
    /// Page offset of the consumer's buffer for the next run.
    dst: AtomicU32,
}

impl RtrbRig {
    fn start(frames: u32, verify: u64) -> RtrbRig {
        let samples = layout(frames).input_samples();
        rtrb_verify(samples, verify);
        let (mut producer, mut consumer) =
            rtrb::RingBuffer::<f32>::new(CAPACITY as usize * samples);
        // Where the allocator put rtrb's buffer decides whether its copies meet the
        // 4 KiB-aliasing cliff (memcpy_alias), so each run says it. An uncommitted chunk
        // writes nothing.
        if let Ok(mut chunk) = producer.write_chunk_uninit(1) {
            let at = chunk.as_mut_slices().0.as_ptr() as usize % 4096;
            eprintln!("rtrb, {frames} frames: its buffer starts at page offset {at}");
        }
        let shared = Arc::new(RtrbShared::default());
        let s = Arc::clone(&shared);
        let handle = common::spawn_pinned(Side::Peer, move || {
            let mut buf = PageBlock::new(samples, 0.0);
            let mut backoff = Backoff::default();
            loop {
                // Idle: park (unpark or a timeout) until a run starts.
                while !s.running.load(Ordering::Acquire) {
                    if s.shutdown.load(Ordering::Acquire) {
                        return;
                    }
                    thread::park_timeout(Duration::from_millis(200));
                }
                buf.place(s.dst.load(Ordering::Acquire));
                s.active.store(true, Ordering::Release);
                loop {
                    match consumer.pop_entire_slice(&mut buf) {
                        Ok(()) => {
                            black_box(&mut buf);
                        }
                        Err(_) if !s.running.load(Ordering::Acquire) && consumer.is_empty() => {
                            break;
                        }
                        Err(_) => backoff.snooze(),
                    }
                }
                s.active.store(false, Ordering::Release);
            }
        });
        RtrbRig {
            producer,
            shared,
            consumer: Some(handle),
            block: PageBlock::new(samples, 0.25),
        }
    }

    fn transfer(&mut self, n: u64) -> Duration {
        let (producer, block) = (&mut self.producer, &self.block);
        let mut tries = Tries::default();
        let t0 = Instant::now();
        for _ in 0..n {
            while producer.push_entire_slice(block).is_err() {
                tries.again("rtrb push");
            }
            tries.done();
        }
        let capacity = self.producer.buffer().capacity();
        spin_until("rtrb drain", || self.producer.slots() == capacity);
        t0.elapsed()
    }

    /// Wakes the consumer, warms up, times `n` blocks, lets the consumer park again.
    fn run(&mut self, n: u64, place: Place) -> Duration {
        self.block.place(place.src);
        self.shared.dst.store(place.dst, Ordering::Release);
        self.shared.running.store(true, Ordering::Release);
        if let Some(h) = &self.consumer {
            h.thread().unpark();
        }
        spin_until("rtrb start", || self.shared.active.load(Ordering::Acquire));
        common::warm_up(|| self.transfer(CAPACITY as u64));
        let elapsed = self.transfer(n);
        self.shared.running.store(false, Ordering::Release);
        spin_until("rtrb stop", || !self.shared.active.load(Ordering::Acquire));
        elapsed
    }
}

impl Drop for RtrbRig {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        if let Some(h) = self.consumer.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// Correctness of the rtrb variant: `n` distinct blocks through the same kind of ring,
/// every sample compared on the consumer thread.
fn rtrb_verify(samples: usize, n: u64) {
    let (mut producer, mut consumer) = rtrb::RingBuffer::<f32>::new(CAPACITY as usize * samples);
    thread::scope(|scope| {
        let checker = scope.spawn(move || {
            common::pin(Side::Peer);
            let mut buf = vec![0.0f32; samples];
            for cycle in 0..n {
                spin_until("rtrb verify pop", || {
                    consumer.pop_entire_slice(&mut buf).is_ok()
                });
                check_pattern(&buf, cycle).unwrap_or_else(|e| panic!("rtrb: {e}"));
            }
        });
        let mut block = vec![0.0f32; samples];
        for cycle in 0..n {
            fill_pattern(&mut block, cycle);
            spin_until("rtrb verify push", || {
                producer.push_entire_slice(&block).is_ok()
            });
        }
        checker.join().expect("rtrb verify consumer");
    });
}

/// The same bytes copied by one thread into a rotation of `CAPACITY` buffers.
struct MemcpyRig {
    block: PageBlock,
    dst: Vec<PageBlock>,
}

impl MemcpyRig {
    fn start(frames: u32) -> MemcpyRig {
        let samples = layout(frames).input_samples();
        let mut block = PageBlock::new(samples, 0.0);
        fill_pattern(&mut block, 7);
        let mut rig = MemcpyRig {
            block,
            dst: (0..CAPACITY)
                .map(|_| PageBlock::new(samples, 0.0))
                .collect(),
        };
        rig.transfer(CAPACITY as u64);
        for d in &rig.dst {
            check_pattern(d, 7).unwrap_or_else(|e| panic!("memcpy: {e}"));
        }
        rig
    }

    fn transfer(&mut self, n: u64) -> Duration {
        let t0 = Instant::now();
        for i in 0..n as usize {
            black_box(&mut self.dst[i % CAPACITY as usize]).copy_from_slice(black_box(&self.block));
        }
        t0.elapsed()
    }

    fn run(&mut self, n: u64, place: Place) -> Duration {
        self.block.place(place.src);
        for d in &mut self.dst {
            d.place(place.dst);
        }
        common::warm_up(|| self.transfer(CAPACITY as u64));
        self.transfer(n)
    }
}

struct Rigs {
    xproc: RingRig,
    threads: RingRig,
    rtrb: RtrbRig,
    memcpy: MemcpyRig,
}

const VARIANTS: [&str; 4] = [
    "ring xproc",
    "ring threads",
    "rtrb threads",
    "memcpy 1 thread",
];

impl Rigs {
    fn start(frames: u32, verify: u64) -> Rigs {
        Rigs {
            xproc: RingRig::start(frames, true, verify),
            threads: RingRig::start(frames, false, verify),
            rtrb: RtrbRig::start(frames, verify),
            memcpy: MemcpyRig::start(frames),
        }
    }

    fn run(&mut self, variant: usize, n: u64, place: Place) -> Duration {
        match variant {
            0 => self.xproc.run(n, place),
            1 => self.threads.run(n, place),
            2 => self.rtrb.run(n, place),
            _ => self.memcpy.run(n, place),
        }
    }
}

// ---------------------------------------------------------------- measurement

fn criterion_group(c: &mut Criterion, frames: u32, rigs: &mut Rigs) {
    let mut group = c.benchmark_group(format!("audio_ring/{frames}f_stereo"));
    group.throughput(Throughput::Bytes(block_bytes(frames) as u64));
    for (variant, name) in VARIANTS.iter().enumerate() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| rigs.run(variant, iters, Place::default()))
        });
    }
    group.finish();
}

/// Blocks per second of every (block size, variant), per round. All sizes and variants
/// are interleaved in every round, so the ratios between variants and between
/// neighbouring block sizes are both taken from runs made close together in time.
fn interleaved(all: &mut [(u32, Rigs)], mode: RunMode) -> Vec<Vec<Vec<f64>>> {
    // Every variant of a size moves the same number of blocks per run: ~2 ms on the
    // cross-process ring.
    let n: Vec<u64> = all
        .iter_mut()
        .map(|(_, rigs)| {
            if mode.is_quick() {
                64
            } else {
                common::calibrate(Duration::from_millis(2), |n| {
                    rigs.run(0, n, Place::default())
                })
            }
        })
        .collect();
    let per_size = VARIANTS.len();
    let per_round = all.len() * per_size;
    // `interleave` measures every (size, variant) once per round, so the call count
    // gives the round, and with it the caller buffers' placement for every variant.
    let mut calls = 0;
    let flat = common::interleave(mode.pick(1, ROUNDS), per_round, |k| {
        let place = Place::for_round(calls / per_round);
        calls += 1;
        let (size, variant) = (k / per_size, k % per_size);
        n[size] as f64 / all[size].1.run(variant, n[size], place).as_secs_f64()
    });
    flat.chunks(per_size).map(|c| c.to_vec()).collect()
}

fn main() {
    if let Some(role) = common::peer_role() {
        match role.as_str() {
            ROLE => run_peer_process(),
            other => {
                eprintln!("ring_audio: unknown peer role {other:?}");
                process::exit(2);
            }
        }
    }
    let mode = RunMode::from_args();
    common::arm_watchdog(
        mode.pick(Duration::from_secs(180), Duration::from_secs(1800)),
        "ring_audio",
    );
    common::pin(Side::Bench);
    let verify = mode.pick(64, 20_000);
    let mut c = common::criterion();
    let mut all = Vec::new();
    for frames in FRAMES {
        let mut rigs = Rigs::start(frames, verify);
        if mode != RunMode::List {
            println!(
                "ring_audio: {frames} frames: {verify} blocks verified intact through every variant"
            );
        }
        if common::with_criterion() {
            criterion_group(&mut c, frames, &mut rigs);
        }
        all.push((frames, rigs));
    }
    c.final_summary();
    if mode == RunMode::List {
        return;
    }
    let rates = interleaved(&mut all, mode);
    drop(all);
    let results: Vec<(u32, Vec<Vec<f64>>)> = FRAMES.into_iter().zip(rates).collect();
    report(&results);
}

fn report(results: &[(u32, Vec<Vec<f64>>)]) {
    print_machine();
    println!(
        "caller buffers: {}",
        if page_aligned_only() {
            "page-aligned in every round (SLOTPOOL_BENCH_PAGE_ALIGNED=1)".to_string()
        } else {
            format!(
                "source and destination at page offsets rotating over {OFFSETS:?} (source every round, destination every {} rounds)",
                OFFSETS.len()
            )
        }
    );
    let mut rows = Vec::new();
    for (frames, per_variant) in results {
        let bytes = block_bytes(*frames) as f64;
        for (name, rates) in VARIANTS.iter().zip(per_variant) {
            let m = median(rates);
            let best = rates.iter().copied().fold(0.0, f64::max);
            rows.push(vec![
                format!("{frames}"),
                name.to_string(),
                format!("{}blk/s", si(m)),
                format!("{:.2}", m * bytes / 1e9),
                format!("{:.2}", best * bytes / 1e9),
                format!("{}", rates.len()),
            ]);
        }
    }
    print_table(
        "AudioRing throughput, stereo f32 (medians of interleaved rounds)",
        &[
            "frames",
            "variant",
            "blocks/s",
            "GB/s",
            "best GB/s",
            "rounds",
        ],
        &rows,
    );

    let mut rows = Vec::new();
    // GB/s of the cross-process ring per round, per size.
    let xproc_gbs: Vec<Vec<f64>> = results
        .iter()
        .map(|(f, v)| {
            v[0].iter()
                .map(|r| r * block_bytes(*f) as f64 / 1e9)
                .collect()
        })
        .collect();
    for (i, (frames, v)) in results.iter().enumerate() {
        let worst_neighbour = [i.checked_sub(1), Some(i + 1)]
            .into_iter()
            .flatten()
            .filter_map(|j| xproc_gbs.get(j))
            .map(|n| paired_ratio(&xproc_gbs[i], n))
            .fold(f64::INFINITY, f64::min);
        rows.push(vec![
            format!("{frames}"),
            format!("{:.2}", paired_ratio(&v[0], &v[2])),
            format!("{:.2}", paired_ratio(&v[0], &v[1])),
            format!("{:.2}", paired_ratio(&v[1], &v[2])),
            format!("{:.2}", paired_ratio(&v[0], &v[3])),
            format!("{worst_neighbour:.2}"),
        ]);
    }
    print_table(
        "AudioRing ratios (median of per-round ratios; targets: xproc/rtrb >= 1.0, xproc/threads >= 0.9, GB/s vs neighbour >= 0.5)",
        &[
            "frames",
            "xproc/rtrb",
            "xproc/threads",
            "threads/rtrb",
            "xproc/memcpy",
            "xproc GB/s / neighbour (min)",
        ],
        &rows,
    );
    if !page_aligned_only() {
        report_by_offset(results);
    }
}

/// xproc/rtrb per page offset of the source and of the destination buffer: the median
/// of the paired ratios of the rounds that had that offset.
fn report_by_offset(results: &[(u32, Vec<Vec<f64>>)]) {
    let mut rows = Vec::new();
    for (frames, v) in results {
        for (side, of_round) in [
            ("source", (|r| Place::for_round(r).src) as fn(usize) -> u32),
            ("destination", |r| Place::for_round(r).dst),
        ] {
            let mut row = vec![format!("{frames}"), side.to_string()];
            for offset in OFFSETS {
                let ratios: Vec<f64> = (0..v[0].len())
                    .filter(|&r| of_round(r) == offset)
                    .map(|r| v[0][r] / v[2][r])
                    .collect();
                row.push(if ratios.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.2}", median(&ratios))
                });
            }
            rows.push(row);
        }
    }
    let mut header = vec!["frames".to_string(), "buffer".to_string()];
    header.extend(OFFSETS.iter().map(|o| format!("@{o}")));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print_table(
        "AudioRing xproc/rtrb by the page offset of the caller's buffer (median of the paired ratios of the rounds with that offset)",
        &header,
        &rows,
    );
}
