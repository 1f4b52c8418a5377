//! The null clock, the offline driver, the record tap and `auto`'s fallback, driven
//! through the public API with processors of our own (the engine is not involved).
//!
//! Timing assertions use bounds a loaded 2-core box cannot break: a late wake-up can only
//! make the null clock run *fewer* blocks (it never bursts), so upper bounds are exact
//! and lower bounds are generous.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use slotpool_host::audio::device::HostChoice;
use slotpool_host::audio::null::NullStream;
use slotpool_host::audio::offline::{self, WavSink};
use slotpool_host::audio::record::{Recorded, Recording};
use slotpool_host::audio::{
    self, Backend, BlockProcessor, OpenOptions, RtState, Running, StreamFormat,
};

// The allocation guard around every process call fires only with this allocator.
#[cfg(debug_assertions)]
#[global_allocator]
static ALLOC: assert_no_alloc::AllocDisabler = assert_no_alloc::AllocDisabler;

/// Aborts the test binary if a test is still running after `secs`.
fn watchdog(secs: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("watchdog: test still running after {secs} s; aborting");
        std::process::abort();
    });
}

const FMT_5MS: StreamFormat = StreamFormat {
    sample_rate: 48_000,
    block_frames: 240,
    channels: 2,
};

/// Records the time of each call (into preallocated space) and sleeps once, long, at
/// call number `stall_at`.
struct Clocked {
    times: Vec<Instant>,
    stall_at: Option<(usize, Duration)>,
}

impl Clocked {
    fn new(stall_at: Option<(usize, Duration)>) -> Clocked {
        Clocked {
            times: Vec::with_capacity(100_000),
            stall_at,
        }
    }
}

impl BlockProcessor for Clocked {
    fn process(&mut self, _input: &[f32], output: &mut [f32]) {
        if self.times.len() < self.times.capacity() {
            self.times.push(Instant::now());
        }
        if let Some((at, d)) = self.stall_at
            && self.times.len() == at
        {
            // Sleeping on the audio thread is the fault under test.
            std::thread::sleep(d);
        }
        output.fill(0.0);
    }
}

/// A deterministic signal, every sample a distinct integer (exact in f32 for the first
/// 16,384 blocks of up to 256 frames × 4 channels).
struct Ramp {
    block: u64,
    frames: usize,
}

impl Ramp {
    fn value(frames: usize, block: u64, channel: usize, frame: usize) -> f32 {
        ((block as usize * frames + frame) * 4 + channel) as f32
    }
}

impl BlockProcessor for Ramp {
    fn process(&mut self, _input: &[f32], output: &mut [f32]) {
        for (c, chan) in output.chunks_exact_mut(self.frames).enumerate() {
            for (i, s) in chan.iter_mut().enumerate() {
                *s = Ramp::value(self.frames, self.block, c, i);
            }
        }
        self.block += 1;
    }
}

#[test]
fn null_clock_runs_one_block_per_period() {
    watchdog(120);
    let start = Instant::now();
    let s = NullStream::start(FMT_5MS, Clocked::new(None), None).expect("start");
    std::thread::sleep(Duration::from_millis(600));
    let p = s.stop();
    let elapsed = start.elapsed();
    let periods = elapsed.as_secs_f64() / FMT_5MS.period().as_secs_f64();
    let blocks = p.times.len() as f64;
    // Absolute deadlines: never more blocks than periods elapsed (+1 for the first,
    // immediate one); a loaded box may run fewer, never less than half.
    assert!(
        blocks <= periods + 1.0,
        "{blocks} blocks in {periods:.1} periods"
    );
    assert!(
        blocks >= periods * 0.5,
        "{blocks} blocks in {periods:.1} periods"
    );
    // The median spacing is one period (5 ms) within a generous margin.
    let mut gaps: Vec<f64> = p
        .times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    assert!((4.0..6.5).contains(&median), "median gap {median:.3} ms");
}

#[test]
fn null_clock_counts_an_overrun_and_reanchors_instead_of_bursting() {
    watchdog(120);
    // Block 20 takes 100 ms = 20 periods.
    let stall = Duration::from_millis(100);
    let start = Instant::now();
    let s = NullStream::start(FMT_5MS, Clocked::new(Some((20, stall))), None).expect("start");
    std::thread::sleep(Duration::from_millis(500));
    let stats = Arc::clone(s.stats());
    let p = s.stop();
    let elapsed = start.elapsed();
    let periods = elapsed.as_secs_f64() / FMT_5MS.period().as_secs_f64();
    let blocks = p.times.len() as f64;

    assert!(stats.device_xruns() >= 1, "the stall is an xrun");
    // A bursting clock would make up the ~19 missed periods and run ~`periods` blocks;
    // re-anchoring loses them for good (late wake-ups only lose more).
    assert!(
        blocks <= periods + 1.0 - 15.0,
        "{blocks} blocks in {periods:.1} periods: the clock made up for the stall"
    );
    // After the stall: one block at once, then one per period — no run of back-to-back
    // blocks catching up.
    let after = &p.times[20..];
    let quick = after
        .windows(2)
        .take(10)
        .filter(|w| w[1] - w[0] < Duration::from_millis(2))
        .count();
    assert!(quick <= 2, "{quick} back-to-back blocks after the stall");
}

#[test]
fn null_clock_records_whether_sched_fifo_was_applied() {
    watchdog(120);
    let s = NullStream::start(FMT_5MS, Clocked::new(None), Some(5)).expect("start");
    while s.stats().blocks() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let state = s.stats().realtime();
    drop(s.stop());
    assert!(
        matches!(
            state,
            RtState::Applied { priority: 5 } | RtState::Refused { priority: 5, .. }
        ),
        "{state:?}"
    );
    eprintln!("realtime: {state}");
}

#[test]
fn offline_driver_hands_every_block_to_the_sink_in_order() {
    let fmt = StreamFormat {
        sample_rate: 44_100,
        block_frames: 64,
        channels: 3,
    };
    let mut ramp = Ramp {
        block: 0,
        frames: 64,
    };
    let mut seen = Vec::new();
    let mut collect = |b: &[f32]| -> Result<(), ()> {
        seen.push(b.to_vec());
        Ok(())
    };
    let n = offline::run(fmt, &mut ramp, 50, &mut collect).expect("run");
    assert_eq!(n, 50);
    assert_eq!(seen.len(), 50);
    for (b, block) in seen.iter().enumerate() {
        assert_eq!(block.len(), 3 * 64);
        assert_eq!(block[64 * 2 + 5], Ramp::value(64, b as u64, 2, 5));
    }
}

#[test]
fn offline_driver_stops_at_the_first_sink_error() {
    let mut ramp = Ramp {
        block: 0,
        frames: 240,
    };
    let mut calls = 0;
    let mut failing = |_: &[f32]| -> Result<(), &'static str> {
        calls += 1;
        if calls == 3 { Err("disk full") } else { Ok(()) }
    };
    assert_eq!(
        offline::run(FMT_5MS, &mut ramp, 10, &mut failing),
        Err("disk full")
    );
    assert_eq!(ramp.block, 3);
}

fn read_wav(path: &std::path::Path) -> (hound::WavSpec, Vec<f32>) {
    let mut r = hound::WavReader::open(path).expect("open wav");
    let spec = r.spec();
    let samples = r.samples::<f32>().map(|s| s.expect("sample")).collect();
    (spec, samples)
}

/// Checks `samples` (interleaved) is whole Ramp blocks, block numbers strictly rising.
/// Returns the block numbers found.
fn ramp_blocks(samples: &[f32], fmt: StreamFormat) -> Vec<u64> {
    let block_len = fmt.block_len();
    assert_eq!(samples.len() % block_len, 0, "file is not whole blocks");
    let mut found = Vec::new();
    for chunk in samples.chunks_exact(block_len) {
        let b = (chunk[0] as usize / (fmt.block_frames * 4)) as u64;
        for i in 0..fmt.block_frames {
            for c in 0..fmt.channels {
                assert_eq!(
                    chunk[i * fmt.channels + c],
                    Ramp::value(fmt.block_frames, b, c, i),
                    "block {b} frame {i} channel {c}"
                );
            }
        }
        if let Some(&last) = found.last() {
            assert!(b > last, "block {b} after {last}");
        }
        found.push(b);
    }
    found
}

#[test]
fn wav_sink_writes_interleaved_float_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("render.wav");
    let fmt = StreamFormat {
        sample_rate: 48_000,
        block_frames: 128,
        channels: 2,
    };
    let mut sink = WavSink::create(&path, fmt).expect("create");
    let mut ramp = Ramp {
        block: 0,
        frames: 128,
    };
    offline::run(fmt, &mut ramp, 30, &mut sink).expect("render");
    assert_eq!(sink.finish().expect("finish"), 30 * 128);
    let (spec, samples) = read_wav(&path);
    assert_eq!(spec.channels, 2);
    assert_eq!(spec.sample_rate, 48_000);
    assert_eq!(spec.sample_format, hound::SampleFormat::Float);
    assert_eq!(ramp_blocks(&samples, fmt), (0..30).collect::<Vec<_>>());
}

#[test]
fn record_tap_writes_exactly_what_the_processor_produced() {
    watchdog(120);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("take.wav");
    let (recording, tap) = Recording::start(&path, FMT_5MS, Duration::from_secs(2)).expect("rec");
    let processor = Recorded::new(
        Ramp {
            block: 0,
            frames: FMT_5MS.block_frames,
        },
        tap,
    );
    let s = NullStream::start(FMT_5MS, processor, None).expect("start");
    while s.stats().blocks() < 40 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let ramp = s.stop().into_inner();
    let report = recording.finish().expect("finish");
    assert_eq!(report.frames_dropped, 0);
    assert_eq!(
        report.frames_written as u64,
        ramp.block * FMT_5MS.block_frames as u64
    );
    let (spec, samples) = read_wav(&path);
    assert_eq!(usize::from(spec.channels), FMT_5MS.channels);
    assert_eq!(
        ramp_blocks(&samples, FMT_5MS),
        (0..ramp.block).collect::<Vec<_>>()
    );
}

#[test]
fn record_tap_drops_whole_blocks_when_the_writer_falls_behind() {
    watchdog(120);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("burst.wav");
    // The ring holds its minimum of 4 blocks; 15,000 blocks pushed back to back outrun
    // any writer.
    let (recording, mut tap) = Recording::start(&path, FMT_5MS, Duration::ZERO).expect("rec");
    let mut ramp = Ramp {
        block: 0,
        frames: FMT_5MS.block_frames,
    };
    let mut block = vec![0.0f32; FMT_5MS.block_len()];
    let total = 15_000u64;
    for _ in 0..total {
        ramp.process(&[], &mut block);
        assert_no_alloc::assert_no_alloc(|| tap.push_block(&block));
    }
    drop(tap);
    let report = recording.finish().expect("finish");
    let frames = FMT_5MS.block_frames as u64;
    assert!(report.frames_dropped > 0);
    assert_eq!(report.frames_dropped % frames, 0);
    assert_eq!(
        report.frames_written as u64 + report.frames_dropped,
        total * frames
    );
    let (_, samples) = read_wav(&path);
    // Whatever was kept is whole, intact blocks.
    assert_eq!(
        ramp_blocks(&samples, FMT_5MS).len() as u64,
        report.frames_written as u64 / frames
    );
}

/// Counts calls; lets a test see a processor is driven, whatever the backend.
struct Counter(Arc<AtomicU64>);

impl BlockProcessor for Counter {
    fn process(&mut self, _input: &[f32], output: &mut [f32]) {
        self.0.fetch_add(1, Ordering::Relaxed);
        output.fill(0.0);
    }
}

fn open_auto(device: Option<&str>) -> (Running, String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let opts = OpenOptions {
        format: FMT_5MS,
        backend: Backend::Auto,
        device: device.map(str::to_string),
        host: HostChoice::Alsa,
        realtime: None,
    };
    let mut notice = String::new();
    let running =
        audio::open(&opts, Box::new(Counter(Arc::clone(&count))), &mut notice).expect("auto opens");
    (running, notice, count)
}

fn wait_for_blocks(count: &AtomicU64, n: u64) {
    while count.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn auto_falls_back_to_null_with_one_line_naming_the_device() {
    watchdog(120);
    let (running, notice, count) = open_auto(Some("slotpool-no-such-device"));
    assert!(
        matches!(running, Running::Null(_)),
        "{}",
        running.describe()
    );
    assert_eq!(notice.lines().count(), 1, "{notice}");
    assert!(notice.contains("\"slotpool-no-such-device\""), "{notice}");
    assert!(notice.contains("ALSA"), "{notice}");
    assert!(notice.contains("null backend"), "{notice}");
    // The same processor is driven by the null clock.
    wait_for_blocks(&count, 3);
    running.stop();
}

#[test]
fn auto_uses_the_default_device_or_says_in_one_line_why_not() {
    watchdog(120);
    let (running, notice, count) = open_auto(None);
    match &running {
        Running::Device(_) => assert!(notice.is_empty(), "{notice}"),
        Running::Null(_) => {
            // On a machine without a sound card (CI, containers).
            eprintln!("auto said: {notice}");
            assert_eq!(notice.lines().count(), 1, "{notice}");
            assert!(
                notice.contains("ALSA output device \"default\""),
                "{notice}"
            );
        }
    }
    wait_for_blocks(&count, 3);
    running.stop();
}

#[test]
fn cpal_backend_reports_the_device_error_instead_of_falling_back() {
    let opts = OpenOptions {
        format: FMT_5MS,
        backend: Backend::Cpal,
        device: Some("slotpool-no-such-device".into()),
        host: HostChoice::Alsa,
        realtime: None,
    };
    let mut notice = String::new();
    let err = audio::open(&opts, Box::new(Counter(Arc::default())), &mut notice)
        .expect_err("no such device");
    assert!(notice.is_empty());
    let msg = err.to_string();
    assert!(msg.contains("slotpool devices"), "{msg}");
}

#[test]
fn live_audio_with_record_writes_the_master_output_of_the_null_backend() {
    watchdog(120);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("live.wav");
    let opts = OpenOptions {
        format: FMT_5MS,
        backend: Backend::Null,
        device: None,
        host: HostChoice::Alsa,
        realtime: None,
    };
    let ramp = Ramp {
        block: 0,
        frames: FMT_5MS.block_frames,
    };
    let mut notice = String::new();
    let live =
        audio::LiveAudio::start(&opts, Box::new(ramp), Some(&path), &mut notice).expect("start");
    assert!(notice.is_empty());
    while live.running().stats().blocks() < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = live.stop().expect("stop").expect("a recording");
    assert_eq!(report.frames_dropped, 0);
    let (_, samples) = read_wav(&path);
    let blocks = ramp_blocks(&samples, FMT_5MS);
    assert!(blocks.len() >= 20);
    assert_eq!(blocks, (0..blocks.len() as u64).collect::<Vec<_>>());
    assert_eq!(report.frames_written, blocks.len() * FMT_5MS.block_frames);
}
