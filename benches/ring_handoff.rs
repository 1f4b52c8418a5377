//! AudioRing against rtrb in a second harness: a fresh consumer thread per run, both
//! sides released together by a barrier, no warm-up, no handshake.
//!
//! `ring_audio` keeps its consumers alive between runs (a process or a thread that sleeps
//! on the doorbell or parks), wakes them with a handshake and warms up for 0.5 ms before
//! it times a run. This bench times the same work with none of that: for every run a
//! consumer thread is spawned and pinned, producer and consumer wait on one barrier, and
//! the producer's clock runs from the barrier until the consumer has released the last
//! block. If the two harnesses disagree on ring/rtrb, the ratio belongs to the harness as
//! much as to the rings (docs/PERFORMANCE.md, "A second harness").
//!
//! The ring runs between two threads, each with its own mapping of the memfd (the host's
//! and a worker's, as `ring_audio`'s `ring threads`; `ring_audio` measures xproc/threads
//! at 1.00). Each side keeps its ring end in its own 128-byte-aligned box (so neither
//! side's private counters share a line with the other side's), rtrb's ends likewise.
//! Caller buffers rotate over the same eight page offsets as in `ring_audio`.
//!
//! Before timing, one run per size and variant moves blocks whose samples all carry
//! their block's number, and the consumer checks every sample; during timed runs the
//! ring's consumer checks that cycle tags arrive in order. `cargo test --benches` runs
//! everything once, tiny.

#[allow(dead_code)] // shared by all bench binaries; each uses a subset
mod common;

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{Ordering, compiler_fence};
use std::thread;
use std::time::{Duration, Instant};

use common::{RunMode, Side, Tries, median, paired_ratio, print_machine, print_table, si};
use slotpool_ring::{AudioConsumer, AudioProducer, HostRegion, PushError, WorkerRegion};

const CHANNELS: u32 = 2;
const CAPACITY: u32 = 16;
const FRAMES: [u32; 5] = [64, 128, 256, 512, 1024];
/// Sample bytes moved per timed run (about 2 ms at the ring's usual rate).
const RUN_BYTES: usize = 16 << 20;
const ROUNDS: usize = 121;
/// The page offsets of `ring_audio` (see its `Place`).
const OFFSETS: [usize; 8] = [0, 576, 1152, 1728, 2304, 2880, 3456, 4032];
const VARIANTS: [&str; 2] = ["ring threads", "rtrb threads"];

/// A side's ring end alone on its lines.
#[repr(align(128))]
struct Own<T>(T);

/// `len` samples at a chosen byte offset of a page.
struct Placed {
    store: Vec<f32>,
    page: usize,
    start: usize,
    len: usize,
}

impl Placed {
    fn new(len: usize) -> Placed {
        let store = vec![0.25; len + 2048];
        let page = (4096 - store.as_ptr() as usize % 4096) % 4096 / 4;
        Placed {
            store,
            page,
            start: page,
            len,
        }
    }
    fn place(&mut self, offset: usize) {
        self.start = self.page + offset / 4;
    }
    fn get(&self) -> &[f32] {
        &self.store[self.start..self.start + self.len]
    }
    fn get_mut(&mut self) -> &mut [f32] {
        &mut self.store[self.start..self.start + self.len]
    }
}

struct Rig {
    frames: u32,
    samples: usize,
    ring_in: Box<Own<AudioProducer>>,
    ring_out: Box<Own<AudioConsumer>>,
    next_cycle: u64,
    rtrb_in: Box<Own<rtrb::Producer<f32>>>,
    rtrb_out: Box<Own<rtrb::Consumer<f32>>>,
    src: Placed,
    dst: Placed,
    // Declared last: dropped after the ends that map them.
    _worker: WorkerRegion,
    _host: HostRegion,
}

impl Rig {
    fn new(frames: u32) -> Rig {
        let layout = common::audio_layout(CHANNELS, frames, CAPACITY);
        let host = HostRegion::create(&format!("handoff:{frames}"), layout)
            .unwrap_or_else(|e| panic!("{frames} frames: creating the region: {e}"));
        let host_end = host.host_end().expect("host end");
        let fd = host
            .fd()
            .try_clone_to_owned()
            .expect("dup of the region fd");
        let worker = WorkerRegion::open(fd).expect("opening the region as a worker");
        let worker_end = worker.worker_end().expect("worker end");
        let samples = layout.input_samples();
        let (p, c) = rtrb::RingBuffer::<f32>::new(CAPACITY as usize * samples);
        Rig {
            frames,
            samples,
            ring_in: Box::new(Own(host_end.audio_in)),
            ring_out: Box::new(Own(worker_end.audio_in)),
            next_cycle: 0,
            rtrb_in: Box::new(Own(p)),
            rtrb_out: Box::new(Own(c)),
            src: Placed::new(samples),
            dst: Placed::new(samples),
            _worker: worker,
            _host: host,
        }
    }

    /// Moves `n` blocks through `variant`; the time from the barrier until the consumer
    /// has released the last block. With `verify`, block `i` carries `i` in every sample
    /// and the consumer checks all of them.
    fn run(&mut self, variant: usize, n: u64, verify: bool) -> Duration {
        let what = format!("{} {}f", VARIANTS[variant], self.frames);
        let start = Barrier::new(2);
        let first = self.next_cycle;
        let (src, dst) = (&mut self.src, &mut self.dst);
        let (ring_in, ring_out) = (&mut self.ring_in.0, &mut self.ring_out.0);
        let (rtrb_in, rtrb_out) = (&mut self.rtrb_in.0, &mut self.rtrb_out.0);
        let elapsed = thread::scope(|scope| {
            // A consumer that stops early says why at once: the producer only notices
            // when its pushes have failed for `PEER_TIMEOUT`.
            let consumer = scope.spawn(|| {
                let said = |e: String| {
                    eprintln!("ring_handoff: {e}");
                    Err::<(), String>(e)
                };
                common::pin(Side::Peer);
                start.wait();
                let deadline = Instant::now() + common::PEER_TIMEOUT;
                let mut got = 0u64;
                let mut idle = 0u32;
                while got < n {
                    let cycle = if variant == 0 {
                        match ring_out.pop(dst.get_mut()) {
                            Ok(Some(cycle)) => Some(cycle),
                            Ok(None) => None,
                            Err(e) => return said(format!("{what}: pop: {e}")),
                        }
                    } else {
                        rtrb_out
                            .pop_entire_slice(dst.get_mut())
                            .ok()
                            .map(|()| first + got)
                    };
                    match cycle {
                        Some(cycle) => {
                            if cycle != first + got {
                                return said(format!(
                                    "{what}: got block {cycle}, expected {}",
                                    first + got
                                ));
                            }
                            if verify
                                && let Some(s) =
                                    dst.get().iter().find(|s| **s != (got % 4096) as f32)
                            {
                                return said(format!("{what}: block {got} holds sample {s}"));
                            }
                            black_box(dst.get_mut());
                            got += 1;
                        }
                        None => {
                            idle = idle.wrapping_add(1);
                            if idle.is_multiple_of(1 << 16) && Instant::now() > deadline {
                                return said(format!("{what}: stuck at block {got} of {n}"));
                            }
                            compiler_fence(Ordering::SeqCst);
                        }
                    }
                }
                Ok(())
            });
            start.wait();
            let t0 = Instant::now();
            let mut tries = Tries::default();
            for i in 0..n {
                if verify {
                    src.get_mut().fill((i % 4096) as f32);
                }
                if variant == 0 {
                    loop {
                        match ring_in.push(first + i, src.get()) {
                            Ok(()) => break,
                            Err(PushError::Full) => tries.again(&what),
                            Err(e) => panic!("{what}: push: {e}"),
                        }
                    }
                } else {
                    while rtrb_in.push_entire_slice(src.get()).is_err() {
                        tries.again(&what);
                    }
                }
                tries.done();
            }
            if variant == 0 {
                common::spin_until(&what, || {
                    ring_in
                        .free_slots()
                        .unwrap_or_else(|e| panic!("{what}: {e}"))
                        == CAPACITY
                });
            } else {
                let capacity = rtrb_in.buffer().capacity();
                common::spin_until(&what, || rtrb_in.slots() == capacity);
            }
            let elapsed = t0.elapsed();
            match consumer.join() {
                Ok(Ok(())) => elapsed,
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => panic!("{what}: consumer thread panicked"),
            }
        });
        if variant == 0 {
            self.next_cycle += n;
        }
        if verify {
            self.src.get_mut().fill(0.25);
        }
        elapsed
    }

    fn place(&mut self, round: usize) {
        self.src.place(OFFSETS[round % OFFSETS.len()]);
        self.dst
            .place(OFFSETS[(round / OFFSETS.len()) % OFFSETS.len()]);
    }
}

fn main() {
    let mode = RunMode::from_args();
    if mode == RunMode::List {
        return;
    }
    common::arm_watchdog(
        mode.pick(Duration::from_secs(120), Duration::from_secs(900)),
        "ring_handoff",
    );
    common::pin(Side::Bench);
    let mut rigs: Vec<Rig> = FRAMES.iter().map(|&f| Rig::new(f)).collect();
    for rig in &mut rigs {
        let n = mode.pick(64, 4096);
        for variant in 0..VARIANTS.len() {
            rig.run(variant, n, true);
        }
        println!(
            "ring_handoff: {} frames: {n} blocks verified intact through both variants",
            rig.frames
        );
    }
    let n: Vec<u64> = rigs
        .iter()
        .map(|r| mode.pick(64, (RUN_BYTES / (r.samples * 4)) as u64))
        .collect();
    let per_round = rigs.len() * VARIANTS.len();
    let mut calls = 0;
    let flat = common::interleave(mode.pick(1, ROUNDS), per_round, |k| {
        let round = calls / per_round;
        calls += 1;
        let (size, variant) = (k / VARIANTS.len(), k % VARIANTS.len());
        let rig = &mut rigs[size];
        rig.place(round);
        n[size] as f64 / rig.run(variant, n[size], false).as_secs_f64()
    });
    print_machine();
    println!(
        "harness: a fresh consumer thread per run, barrier start, no warm-up; caller buffers at page offsets rotating over {OFFSETS:?}"
    );
    let mut rows = Vec::new();
    for (i, rig) in rigs.iter().enumerate() {
        let (ring, rtrb) = (&flat[i * 2], &flat[i * 2 + 1]);
        rows.push(vec![
            format!("{}", rig.frames),
            format!("{}blk/s", si(median(ring))),
            format!("{}blk/s", si(median(rtrb))),
            format!("{:.2}", paired_ratio(ring, rtrb)),
            format!("{}", ring.len()),
        ]);
    }
    print_table(
        "AudioRing hand-off, second harness (medians of interleaved rounds; ratio: median of per-round ratios)",
        &[
            "frames",
            "ring threads",
            "rtrb threads",
            "ring/rtrb",
            "rounds",
        ],
        &rows,
    );
}
