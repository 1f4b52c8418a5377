//! The memcpy 4 KiB-aliasing check.
//!
//! glibc's memcpy on AMD Zen has been reported to slow down by up to ~30x for 4-8 KiB
//! copies when source and destination sit at certain offsets from each other modulo the
//! 4 KiB page (`(dst - src) mod 4096` small). The audio ring lays its slots out with a
//! stride of `round_up(64 + block bytes, 128) + 64` so consecutive blocks never sit at the
//! same page offset (docs/ABI.md). This bench measures:
//!
//! 1. memcpy time for 4-8 KiB copies over every 16-byte step of `(dst - src) mod 4096`,
//!    at two source page offsets: is there a cliff on this machine, and where;
//! 2. pushing (caller buffer -> slot) and popping (slot -> caller buffer) blocks of 64-1024
//!    stereo frames into 16 consecutive slots laid out three ways — page-aligned slots
//!    (every block at the same page offset), 128-byte rounded slots without the skew, and
//!    the ring's stride — for caller buffers at every 64-byte page offset: the worst
//!    caller offset shows whether a layout can hit the cliff.
//!
//! 3. the real AudioRing, push then pop on one thread, with the caller's buffers at every
//!    64-byte page offset (so every slot meets every caller offset).
//!
//! 4. blocks handed from one core to another through ring-like slots, with the samples
//!    16 bytes into the slot (right after the tag: ABI 1's layout) or 64 bytes in (on
//!    their own cache lines: the ring's layout since ABI 2): what the tag sharing the
//!    samples' first line costs.
//!
//! Each configuration's copies are checked byte for byte before they are timed.

#[allow(dead_code)] // shared by all bench binaries; each uses a subset
mod common;

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{RunMode, Side, median, print_machine, print_table};
use criterion::{BenchmarkId, Criterion, Throughput};
use slotpool_ring::{HostRegion, SlotLayout, WorkerRegion};

const PAGE: usize = 4096;
/// Slots per simulated ring (the audio benches use the same capacity).
const SLOTS: usize = 16;
/// Bytes of the slot header before the samples (cycle u64, frames u32, channels u32).
const SLOT_HEADER: usize = slotpool_ring::AUDIO_SLOT_HEADER;
/// Where ABI 1 put the samples: right after the 16-byte tag (part 4's comparison).
const ABI1_SAMPLES_AT: usize = slotpool_ring::AUDIO_SLOT_TAG;
const CHANNELS: usize = 2;

/// A zero-filled buffer of `len` usable bytes starting on a page boundary.
struct PageBuf {
    bytes: Vec<u8>,
    start: usize,
}

impl PageBuf {
    fn new(len: usize) -> PageBuf {
        let bytes = vec![0u8; len + PAGE];
        let start = (PAGE - bytes.as_ptr() as usize % PAGE) % PAGE;
        PageBuf { bytes, start }
    }

    /// `len` bytes at page offset (or any offset) `at` from the aligned start.
    fn at(&mut self, at: usize, len: usize) -> &mut [u8] {
        &mut self.bytes[self.start + at..self.start + at + len]
    }
}

/// Nanoseconds per call of `copy`, timed over one batch of `batch` calls.
fn time_ns(batch: usize, mut copy: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    for _ in 0..batch {
        copy();
    }
    t0.elapsed().as_nanos() as f64 / batch as f64
}

/// Measures every point once per pass, `passes` times, and keeps each point's median:
/// a burst of load from another process spoils one pass of a few points, not a point.
fn sweep<P: Copy>(points: &[P], passes: usize, mut measure: impl FnMut(P) -> f64) -> Vec<f64> {
    let mut samples = vec![Vec::with_capacity(passes); points.len()];
    for _ in 0..passes {
        for (i, &p) in points.iter().enumerate() {
            samples[i].push(measure(p));
        }
    }
    samples.iter().map(|s| median(s)).collect()
}

fn fill_pattern(buf: &mut [u8], seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
}

/// Part 1: ns per memcpy of `size` bytes for every `(dst - src) mod 4096` in `deltas`,
/// the source at page offset `src_offset`.
fn sweep_deltas(size: usize, src_offset: usize, deltas: &[usize], mode: RunMode) -> Vec<f64> {
    let mut src = PageBuf::new(size + PAGE);
    let mut dst = PageBuf::new(size + 2 * PAGE);
    fill_pattern(src.at(0, size + PAGE), 7);
    let s = &src.bytes[src.start + src_offset..src.start + src_offset + size];
    let dst_at = |dst: &mut PageBuf, delta: usize| {
        let at = dst.start + (src_offset + delta) % PAGE;
        (at, at + size)
    };
    // Correctness first: the copy at every delta delivers the bytes intact.
    for &delta in deltas {
        let (a, b) = dst_at(&mut dst, delta);
        dst.bytes[a..b].fill(0);
        dst.bytes[a..b].copy_from_slice(s);
        assert_eq!(
            &dst.bytes[a..b],
            s,
            "memcpy of {size} B at delta {delta} corrupted data"
        );
    }
    let (passes, batch) = mode.pick((1, 2), (7, 200));
    sweep(deltas, passes, |delta| {
        let (a, b) = dst_at(&mut dst, delta);
        let d = &mut dst.bytes[a..b];
        time_ns(batch, || black_box(&mut *d).copy_from_slice(black_box(s)))
    })
}

/// Condenses the deltas whose time is above `threshold` into ranges (`16-48, 4064`).
fn ranges(deltas: &[usize], times: &[f64], threshold: f64, step: usize) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    for (&d, &t) in deltas.iter().zip(times) {
        if t > threshold {
            run = match run {
                Some((a, b)) if b + step == d => Some((a, d)),
                Some((a, b)) => {
                    out.push(if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    });
                    Some((d, d))
                }
                None => Some((d, d)),
            };
        }
    }
    if let Some((a, b)) = run {
        out.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(", ")
    }
}

fn part1(mode: RunMode) {
    let step = mode.pick(1024, 4);
    let deltas: Vec<usize> = (0..PAGE).step_by(step).collect();
    let sizes = [4096usize, 5120, 6144, 7168, 8192];
    let src_offsets = [0usize, 1040];
    let mut rows = Vec::new();
    for &size in &sizes {
        for &src_offset in &src_offsets {
            let times = sweep_deltas(size, src_offset, &deltas, mode);
            let med = median(&times);
            let (worst_i, worst) = times
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, t)| (i, *t))
                .expect("at least one delta");
            let best = times.iter().copied().fold(f64::INFINITY, f64::min);
            rows.push(vec![
                size.to_string(),
                src_offset.to_string(),
                format!("{best:.0}"),
                format!("{med:.0}"),
                format!("{:.1}", size as f64 / med),
                format!("{worst:.0} @ {}", deltas[worst_i]),
                format!("{:.2}x", worst / med),
                ranges(&deltas, &times, 1.25 * med, step),
            ]);
        }
    }
    print_table(
        &format!("memcpy vs (dst - src) mod 4096, every {step} B (ns per copy, median of passes)"),
        &[
            "bytes",
            "src off",
            "fastest",
            "median",
            "GB/s@med",
            "slowest @ delta",
            "slow/med",
            "deltas > 1.25x median",
        ],
        &rows,
    );
}

/// A slot layout for a block of `bytes` sample bytes: slot stride and where the samples
/// start inside a slot.
#[derive(Clone, Copy, Debug)]
struct Layout {
    name: &'static str,
    stride: usize,
    data_offset: usize,
}

fn layouts(bytes: usize) -> [Layout; 3] {
    let rounded = (SLOT_HEADER + bytes).div_ceil(128) * 128;
    [
        Layout {
            name: "page-aligned slots",
            stride: bytes.div_ceil(PAGE) * PAGE,
            data_offset: 0,
        },
        Layout {
            name: "128-rounded, no skew",
            stride: rounded,
            data_offset: SLOT_HEADER,
        },
        Layout {
            name: "ring (128-rounded + 64 skew)",
            stride: ring_slot_stride(bytes),
            data_offset: SLOT_HEADER,
        },
    ]
}

fn ring_layout(frames: u32) -> SlotLayout {
    SlotLayout {
        channels_in: CHANNELS as u32,
        channels_out: CHANNELS as u32,
        block_frames: frames,
        audio_capacity: SLOTS as u32,
        command_capacity: 64,
        event_capacity: 64,
    }
}

/// The audio slot stride of the ring for a block of `bytes` sample bytes, from the ring
/// crate itself.
fn ring_slot_stride(bytes: usize) -> usize {
    let frames = (bytes / (CHANNELS * 4)) as u32;
    ring_layout(frames).audio_stride(CHANNELS as u32)
}

/// Part 2: ns per block pushed into (and popped from) `SLOTS` consecutive slots of
/// `layout`, for the caller's buffer at each page offset in `caller_offsets`.
fn ring_copy_ns(
    layout: Layout,
    bytes: usize,
    caller_offsets: &[usize],
    mode: RunMode,
) -> (Vec<f64>, Vec<f64>) {
    let mut region = PageBuf::new(SLOTS * layout.stride + PAGE);
    let mut caller = PageBuf::new(bytes + PAGE);
    let slot = |i: usize| region.start + layout.data_offset + i * layout.stride;
    let (passes, rounds) = mode.pick((1, 1), (5, 8));

    // Correctness first: every slot receives the block intact and gives it back intact.
    for &offset in caller_offsets {
        fill_pattern(caller.at(offset, bytes), offset as u8);
        let block = caller.at(offset, bytes).to_vec();
        for i in 0..SLOTS {
            region.bytes[slot(i)..slot(i) + bytes].copy_from_slice(&block);
            caller.at(offset, bytes).fill(0);
            caller
                .at(offset, bytes)
                .copy_from_slice(&region.bytes[slot(i)..slot(i) + bytes]);
            assert_eq!(
                caller.at(offset, bytes),
                &block[..],
                "{}: slot {i} corrupted the block",
                layout.name
            );
        }
    }
    let blocks = rounds * SLOTS;
    let caller_range = |offset: usize| caller.start + offset..caller.start + offset + bytes;
    let push = sweep(caller_offsets, passes, |offset| {
        let c = &caller.bytes[caller_range(offset)];
        let r = &mut region.bytes;
        let t0 = Instant::now();
        for _ in 0..rounds {
            for i in 0..SLOTS {
                black_box(&mut r[slot(i)..slot(i) + bytes]).copy_from_slice(black_box(c));
            }
        }
        t0.elapsed().as_nanos() as f64 / blocks as f64
    });
    let pop = sweep(caller_offsets, passes, |offset| {
        let range = caller_range(offset);
        let c = &mut caller.bytes[range];
        let r = &region.bytes;
        let t0 = Instant::now();
        for _ in 0..rounds {
            for i in 0..SLOTS {
                black_box(&mut *c).copy_from_slice(black_box(&r[slot(i)..slot(i) + bytes]));
            }
        }
        t0.elapsed().as_nanos() as f64 / blocks as f64
    });
    (push, pop)
}

fn part2(mode: RunMode) {
    let step = mode.pick(1024, 64);
    let frames_list = [64usize, 128, 256, 512, 768, 1024];
    let offsets: Vec<usize> = (0..PAGE).step_by(step).collect();
    let mut rows = Vec::new();
    for &frames in &frames_list {
        let bytes = frames * CHANNELS * 4;
        for layout in layouts(bytes) {
            let (push, pop) = ring_copy_ns(layout, bytes, &offsets, mode);
            let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
            let gbps = |ns: f64| format!("{:.1}", bytes as f64 / ns);
            rows.push(vec![
                format!("{frames} ({bytes} B)"),
                layout.name.to_string(),
                layout.stride.to_string(),
                gbps(median(&push)),
                gbps(worst(&push)),
                format!("{:.2}x", worst(&push) / median(&push)),
                gbps(median(&pop)),
                gbps(worst(&pop)),
                format!("{:.2}x", worst(&pop) / median(&pop)),
            ]);
        }
    }
    print_table(
        &format!(
            "block copies into/out of {SLOTS} consecutive slots, caller buffer at every {step} B page offset (GB/s)"
        ),
        &[
            "frames x2 f32",
            "slot layout",
            "stride",
            "push med",
            "push worst",
            "worst slowdown",
            "pop med",
            "pop worst",
            "worst slowdown",
        ],
        &rows,
    );
}

/// Part 3: the real thing. One thread pushes a block into a real AudioRing (memfd
/// region) and pops it back out, with its own buffers at every 64-byte page offset, so
/// every slot of the ring meets every caller offset. ns per push+pop.
fn part3(mode: RunMode) {
    let step = mode.pick(1024, 64);
    let mut rows = Vec::new();
    for frames in [512u32, 768, 1024] {
        let layout = ring_layout(frames);
        let region = HostRegion::create("bench:alias", layout).expect("creating a slot region");
        let mut host = region.host_end().expect("host end");
        let worker = WorkerRegion::open(region.fd().try_clone_to_owned().expect("dup"))
            .expect("opening the region");
        let mut end = worker.worker_end().expect("worker end");
        let samples = layout.input_samples();
        let bytes = samples * 4;
        // f32 buffers placed at a chosen page offset inside a page-aligned allocation.
        let mut src_store = vec![0.0f32; samples + 2 * PAGE / 4];
        let mut dst_store = vec![0.0f32; samples + 2 * PAGE / 4];
        let page_start = |v: &Vec<f32>| (PAGE - v.as_ptr() as usize % PAGE) % PAGE / 4;
        let (src0, dst0) = (page_start(&src_store), page_start(&dst_store));
        let offsets: Vec<usize> = (0..PAGE).step_by(step).collect();
        let (passes, blocks) = mode.pick((1, SLOTS), (5, 8 * SLOTS));
        let mut cycle = 0u64;
        // Correctness first, at every offset and through every slot.
        for &off in &offsets {
            let (s, d) = (src0 + off / 4, dst0 + off / 4);
            for i in 0..SLOTS {
                for (k, x) in src_store[s..s + samples].iter_mut().enumerate() {
                    *x = (k + i * 7 + off) as f32;
                }
                host.audio_in
                    .push(cycle, &src_store[s..s + samples])
                    .expect("push");
                let got = end
                    .audio_in
                    .pop(&mut dst_store[d..d + samples])
                    .expect("pop");
                assert_eq!(got, Some(cycle), "ring returned the wrong block");
                assert_eq!(
                    src_store[s..s + samples],
                    dst_store[d..d + samples],
                    "ring corrupted block {cycle}"
                );
                cycle += 1;
            }
        }
        let times = sweep(&offsets, passes, |off| {
            let (s, d) = (src0 + off / 4, dst0 + off / 4);
            let t0 = Instant::now();
            for _ in 0..blocks {
                host.audio_in
                    .push(cycle, black_box(&src_store[s..s + samples]))
                    .expect("push");
                end.audio_in
                    .pop(black_box(&mut dst_store[d..d + samples]))
                    .expect("pop");
                cycle += 1;
            }
            t0.elapsed().as_nanos() as f64 / blocks as f64
        });
        let med = median(&times);
        let (worst_i, worst) = times
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, t)| (i, *t))
            .expect("offsets");
        rows.push(vec![
            format!("{frames} ({bytes} B)"),
            layout.audio_stride(CHANNELS as u32).to_string(),
            format!("{med:.0}"),
            format!("{:.1}", 2.0 * bytes as f64 / med),
            format!("{worst:.0} @ {}", offsets[worst_i]),
            format!("{:.2}x", worst / med),
        ]);
    }
    print_table(
        &format!(
            "real AudioRing push+pop on one thread, caller buffers at every {step} B page offset (ns per block)"
        ),
        &[
            "frames x2 f32",
            "stride",
            "median",
            "GB/s copied (2 copies)",
            "slowest @ offset",
            "slow/med",
        ],
        &rows,
    );
}

/// Part 4: blocks handed from one core to another through `SLOTS` slots laid out like
/// the ring's (128-aligned control, stride `round_up(header + bytes, 128) + 64`), with
/// the samples 16 bytes into the slot (ABI 1: right after the 16-byte tag, so every
/// block starts 16 bytes into a cache line) or 64 bytes in (the ring since ABI 2: the
/// tag alone on the first line, the samples on their own lines). One copy in on this core, one copy out on the other,
/// like the ring; caller buffers page-aligned. This is a model of the ring, not the
/// ring: it isolates the one layout choice it varies.
struct HandOff {
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
    /// Where each block's cycle tag goes (part 5); part 4 writes none.
    tag: Tag,
    /// The tags of [`Tag::Separate`]: 8 to a cache line, apart from the samples.
    tags: CachePadded<[AtomicU64; SLOTS]>,
    bytes: Box<[UnsafeCell<u8>]>,
    /// Offset of the first 128-aligned byte of `bytes`.
    base: usize,
    stride: usize,
    data_offset: usize,
    len: usize,
}

// SAFETY: the slot bytes are shared only through the SPSC protocol: the producer writes
// slot `h` only while `h - tail < SLOTS` (its Acquire load of `tail` pairs with the
// consumer's Release store after reading that slot), the consumer reads slot `t` only
// while `t < head` (its Acquire load of `head` pairs with the producer's Release store
// after writing it). A slot's bytes are never accessed by both threads at once.
unsafe impl Sync for HandOff {}

/// Where a block's 8-byte cycle tag lives in the part-5 model.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tag {
    /// No tag (part 4; and part 5's floor: what rtrb moves).
    None,
    /// In the slot's first line, the samples from +64: the ring since ABI 2.
    InSlot,
    /// In an array of their own, 8 tags to a line; the samples from +0 of the slot.
    Separate,
}

impl HandOff {
    fn new(len: usize, data_offset: usize) -> HandOff {
        HandOff::with_tag(len, data_offset, Tag::None)
    }

    fn with_tag(len: usize, data_offset: usize, tag: Tag) -> HandOff {
        assert!(
            tag != Tag::InSlot || data_offset >= 8,
            "the tag must fit before the samples"
        );
        let stride = (data_offset + len).div_ceil(128) * 128 + 64;
        let bytes: Box<[UnsafeCell<u8>]> = (0..SLOTS * stride + 128)
            .map(|_| UnsafeCell::new(0))
            .collect();
        let base = (128 - bytes.as_ptr() as usize % 128) % 128;
        HandOff {
            head: CachePadded(AtomicU64::new(0)),
            tail: CachePadded(AtomicU64::new(0)),
            tag,
            tags: CachePadded(std::array::from_fn(|_| AtomicU64::new(0))),
            bytes,
            base,
            stride,
            data_offset,
            len,
        }
    }

    /// The samples of the slot for counter value `pos`.
    fn slot(&self, pos: u64) -> *mut u8 {
        let off = self.base + (pos as usize % SLOTS) * self.stride + self.data_offset;
        debug_assert!(off + self.len <= self.bytes.len());
        UnsafeCell::raw_get(self.bytes[off..].as_ptr())
    }

    /// The first 8 bytes of the slot for `pos` (its tag, for [`Tag::InSlot`]).
    fn tag_in_slot(&self, pos: u64) -> *mut u64 {
        let off = self.base + (pos as usize % SLOTS) * self.stride;
        debug_assert!(off + 8 <= self.bytes.len());
        UnsafeCell::raw_get(self.bytes[off..].as_ptr()).cast::<u64>()
    }

    fn push(&self, head: u64, block: &[u8]) {
        common::spin_until("hand-off push", || {
            head - self.tail.0.load(Ordering::Acquire) < SLOTS as u64
        });
        assert_eq!(block.len(), self.len);
        // SAFETY: the slot is ours (checked above: the consumer released it) and lies in
        // `bytes` (debug-checked in `slot`); `block` is our own memory of `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(block.as_ptr(), self.slot(head), self.len) };
        match self.tag {
            Tag::None => {}
            // SAFETY: as above; the tag is the slot's first 8 bytes, before the samples
            // from `data_offset`, which `with_tag` asserts is at least 8 for this mode.
            Tag::InSlot => unsafe { self.tag_in_slot(head).write_unaligned(head) },
            // Relaxed: published by the Release store of `head` below.
            Tag::Separate => self.tags.0[head as usize % SLOTS].store(head, Ordering::Relaxed),
        }
        // Release pairs with the consumer's Acquire load of `head`: publishes the slot.
        self.head.0.store(head + 1, Ordering::Release);
    }

    /// Copies every published block out into `out`; returns the new tail.
    fn drain(&self, mut tail: u64, out: &mut [u8]) -> u64 {
        // Acquire pairs with the producer's Release store of `head`.
        let head = self.head.0.load(Ordering::Acquire);
        while tail < head {
            let tag = match self.tag {
                Tag::None => tail,
                // SAFETY: as for the samples below; the tag is the slot's first 8 bytes.
                Tag::InSlot => unsafe { self.tag_in_slot(tail).read_unaligned() },
                // Relaxed: ordered by the Acquire load of `head` above.
                Tag::Separate => self.tags.0[tail as usize % SLOTS].load(Ordering::Relaxed),
            };
            assert_eq!(tag, tail, "hand-off tag");
            // SAFETY: slot `tail` is published (tail < head) and not yet released, so the
            // producer does not touch it; `out` is our own memory of `len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(self.slot(tail), out.as_mut_ptr(), self.len) };
            tail += 1;
            // Release pairs with the producer's Acquire load of `tail`: our read is done.
            self.tail.0.store(tail, Ordering::Release);
        }
        tail
    }
}

#[repr(align(128))]
struct CachePadded<T>(T);

/// Block sizes of the hand-off model (parts 4 and 5): 64 to 1024 frames of stereo f32.
const HAND_OFF_LENS: [usize; 5] = [512, 1024, 2048, 4096, 8192];

fn part4(mode: RunMode) {
    let offsets = [ABI1_SAMPLES_AT, SLOT_HEADER];
    let rates = hand_off_rates(mode, |len| offsets.map(|off| HandOff::new(len, off)).into());
    let rows: Vec<Vec<String>> = HAND_OFF_LENS
        .iter()
        .enumerate()
        .map(|(l, &len)| {
            let gbs = |r: &[f64]| format!("{:.1}", median(r) * len as f64 / 1e9);
            let best = |r: &[f64]| {
                format!(
                    "{:.1}",
                    r.iter().copied().fold(0.0, f64::max) * len as f64 / 1e9
                )
            };
            vec![
                format!("{} ({len} B)", len / (CHANNELS * 4)),
                gbs(&rates[2 * l]),
                gbs(&rates[2 * l + 1]),
                best(&rates[2 * l]),
                best(&rates[2 * l + 1]),
                format!(
                    "{:.2}",
                    common::paired_ratio(&rates[2 * l + 1], &rates[2 * l])
                ),
            ]
        })
        .collect();
    print_table(
        "cross-core block hand-off through 16 ring-like slots: samples at +16 (ABI 1) vs +64 (the ring since ABI 2) in the slot (GB/s, medians of interleaved rounds)",
        &[
            "frames x2 f32",
            "+16 median",
            "+64 median",
            "+16 best",
            "+64 best",
            "+64 / +16 (paired)",
        ],
        &rows,
    );
}

/// Part 5: where the cycle tag goes. The same hand-off with an 8-byte tag written by
/// the producer and checked by the consumer for every block: in the slot's first line
/// (the ring's layout since ABI 2: one line more per block than the samples), in an
/// array of tags of its own (8 to a line), or no tag at all (what rtrb moves). Answers
/// whether moving the tags out of the slots (an ABI change) would close the gap to rtrb.
fn part5(mode: RunMode) {
    let kinds = [
        (Tag::InSlot, SLOT_HEADER),
        (Tag::Separate, 0),
        (Tag::None, 0),
    ];
    let rates = hand_off_rates(mode, |len| {
        kinds
            .map(|(tag, off)| HandOff::with_tag(len, off, tag))
            .into()
    });
    let rows: Vec<Vec<String>> = HAND_OFF_LENS
        .iter()
        .enumerate()
        .map(|(l, &len)| {
            let r = |k: usize| &rates[3 * l + k];
            let gbs = |k: usize| format!("{:.2}", median(r(k)) * len as f64 / 1e9);
            vec![
                format!("{} ({len} B)", len / (CHANNELS * 4)),
                gbs(0),
                gbs(1),
                gbs(2),
                format!("{:.3}", common::paired_ratio(r(1), r(0))),
                format!("{:.3}", common::paired_ratio(r(2), r(0))),
            ]
        })
        .collect();
    print_table(
        "cross-core block hand-off with an 8-byte cycle tag per block: tag in the slot's first line (ring, ABI 2) vs tags in their own lines vs no tag (GB/s, medians of interleaved rounds; ratios: medians of paired per-round ratios)",
        &[
            "frames x2 f32",
            "tag in slot",
            "tags apart",
            "no tag",
            "apart / in slot",
            "no tag / in slot",
        ],
        &rows,
    );
}

/// Blocks per second through the rings `per_len` builds for each of [`HAND_OFF_LENS`]
/// (in that order), one core to the other, interleaved over many short rounds (see
/// common::calibrate for why): per ring, one rate per round.
fn hand_off_rates(mode: RunMode, per_len: impl Fn(usize) -> Vec<HandOff>) -> Vec<Vec<f64>> {
    let rings: Arc<Vec<HandOff>> = Arc::new(HAND_OFF_LENS.into_iter().flat_map(per_len).collect());
    let current = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (rings, current, stop) = (Arc::clone(&rings), Arc::clone(&current), Arc::clone(&stop));
        common::spawn_pinned(Side::Peer, move || {
            let mut out = PageBuf::new(8192);
            let mut tails = vec![0u64; rings.len()];
            let mut checked = vec![false; rings.len()];
            while !stop.load(Ordering::Acquire) {
                let i = current.load(Ordering::Acquire);
                let ring = &rings[i];
                let len = ring.len;
                let before = tails[i];
                tails[i] = ring.drain(tails[i], out.at(0, len));
                if !checked[i] && tails[i] > before {
                    // Correctness first: the first block through each layout arrives intact.
                    let mut expected = vec![0u8; len];
                    fill_pattern(&mut expected, 9);
                    assert_eq!(out.at(0, len), &expected[..], "hand-off corrupted a block");
                    checked[i] = true;
                }
                black_box(out.at(0, len));
            }
        })
    };
    let mut src = PageBuf::new(8192);
    fill_pattern(src.at(0, 8192), 9);
    let mut heads = vec![0u64; rings.len()];
    let mut run = |i: usize, n: u64| -> Duration {
        current.store(i, Ordering::Release);
        let ring = &rings[i];
        let block = &src.bytes[src.start..src.start + ring.len];
        let mut transfer = |n: u64| {
            let t0 = Instant::now();
            for _ in 0..n {
                ring.push(heads[i], block);
                heads[i] += 1;
            }
            common::spin_until("hand-off drain", || {
                ring.tail.0.load(Ordering::Acquire) == heads[i]
            });
            t0.elapsed()
        };
        // Untimed warm-up, as in ring_audio.
        common::warm_up(|| transfer(SLOTS as u64));
        transfer(n)
    };
    // Short runs, many rounds, judged by the per-round ratio (see common::calibrate for why).
    let n = mode.pick(16, 2000);
    let rates = common::interleave(mode.pick(1, 101), rings.len(), |i| {
        n as f64 / run(i, n).as_secs_f64()
    });
    stop.store(true, Ordering::Release);
    consumer.join().expect("hand-off consumer");
    rates
}

fn criterion_part(c: &mut Criterion) {
    let size = 8192usize;
    let mut src = PageBuf::new(size + PAGE);
    let mut dst = PageBuf::new(size + 2 * PAGE);
    fill_pattern(src.at(0, size), 1);
    let mut group = c.benchmark_group("memcpy_8KiB_by_page_delta");
    group.throughput(Throughput::Bytes(size as u64));
    for delta in [0usize, 16, 64, 2048, 4064] {
        let s = &src.bytes[src.start..src.start + size];
        let d = &mut dst.bytes[dst.start + delta..dst.start + delta + size];
        d.copy_from_slice(s);
        assert_eq!(d, s, "memcpy at delta {delta} corrupted data");
        group.bench_function(BenchmarkId::from_parameter(delta), |b| {
            b.iter(|| black_box(&mut *d).copy_from_slice(black_box(s)))
        });
    }
    group.finish();
}

fn main() {
    let mode = RunMode::from_args();
    common::arm_watchdog(
        mode.pick(Duration::from_secs(120), Duration::from_secs(1800)),
        "memcpy_alias",
    );
    common::pin(Side::Bench);
    let mut c = common::criterion();
    if common::with_criterion() {
        criterion_part(&mut c);
    }
    c.final_summary();
    if mode == RunMode::List {
        return;
    }
    print_machine();
    part1(mode);
    part2(mode);
    part3(mode);
    part4(mode);
    part5(mode);
}
