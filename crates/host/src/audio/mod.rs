//! Audio backends: what clocks the cycle and where the master output goes.
//!
//! - [`null`]: a real-time clock thread (absolute-deadline sleeps on `CLOCK_MONOTONIC`,
//!   timer slack 1 ns) that discards the output — headless servers and tests;
//! - [`offline`]: no clock, as fast as the processor goes, each block handed to a sink
//!   (a WAV file for `slotpool render`);
//! - [`device`]: a real device through cpal (ALSA, or a JACK server with the `jack`
//!   feature);
//! - [`open`] with [`Backend::Auto`]: the device if a stream opens, else one line saying
//!   which device and why, and `null`;
//! - [`record`]: `--record FILE.wav`, a tap on the master output handed off the audio
//!   thread through a wait-free ring to a writer thread;
//! - [`rt`]: SCHED_FIFO for the audio thread, and what happened when it was asked for.
//!
//! Every backend calls a [`BlockProcessor`] once per block of `block_frames` frames, on
//! its audio thread, with planar buffers allocated before the stream starts. Around each
//! call debug builds arm the allocation guard (`assert_no_alloc`): a processor that
//! allocates aborts a debug run whose global allocator is `assert_no_alloc::AllocDisabler`.
//!
//! Thread rules: [`open`], [`null::NullStream::start`], [`device::DeviceStream::open`] and
//! `stop` run on a control thread and may allocate; the processor and the record tap's
//! producer run on the audio thread and do not.

pub mod device;
pub mod devices;
pub mod null;
pub mod offline;
pub mod record;
pub mod rt;
mod sys;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::config::Backend;
pub use rt::RtState;

/// What a backend drives: the engine's trait (planar f32, once per block, on the audio
/// thread; no allocation, lock, log or blocking call).
pub use crate::engine::BlockProcessor;

impl<P: BlockProcessor + ?Sized> BlockProcessor for Box<P> {
    fn process(&mut self, input: &[f32], output: &mut [f32]) {
        (**self).process(input, output);
    }
}

/// Calls `processor` under the debug allocation guard (a no-op in release builds).
#[inline]
pub(crate) fn guarded_process<P: BlockProcessor + ?Sized>(
    processor: &mut P,
    input: &[f32],
    output: &mut [f32],
) {
    assert_no_alloc::assert_no_alloc(|| processor.process(input, output));
}

/// The shape of the audio stream every backend runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamFormat {
    /// Frames per second.
    pub sample_rate: u32,
    /// Frames per block handed to the processor.
    pub block_frames: usize,
    /// Channels of input and output.
    pub channels: usize,
}

impl StreamFormat {
    /// The format `[engine]` asks for.
    pub fn from_engine(engine: &crate::config::EngineConfig) -> StreamFormat {
        StreamFormat {
            sample_rate: engine.sample_rate,
            block_frames: engine.block_frames as usize,
            channels: engine.channels as usize,
        }
    }

    /// Samples in one planar block (`channels × block_frames`).
    pub fn block_len(&self) -> usize {
        self.channels * self.block_frames
    }

    /// The duration of one block.
    pub fn period(&self) -> Duration {
        self.duration_of_blocks(1)
    }

    /// The duration of `blocks` blocks, exact to the nanosecond (no accumulated rounding).
    pub fn duration_of_blocks(&self, blocks: u64) -> Duration {
        let ns = u128::from(blocks) * self.block_frames as u128 * 1_000_000_000
            / u128::from(self.sample_rate.max(1));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Checks the numbers are usable: non-zero and small enough to allocate.
    pub fn validate(&self) -> Result<(), String> {
        if self.sample_rate == 0 || self.block_frames == 0 || self.channels == 0 {
            return Err(format!(
                "sample_rate ({}), block_frames ({}) and channels ({}) must all be above 0",
                self.sample_rate, self.block_frames, self.channels
            ));
        }
        if self.block_len() > 1 << 24 {
            return Err(format!(
                "block_frames × channels = {} is too large (at most 16777216 samples a block)",
                self.block_len()
            ));
        }
        Ok(())
    }
}

/// Counters a running backend keeps, shared with status readers. Written by the audio
/// thread (and the device's error callback) with Relaxed stores: each is an independent
/// monotonic counter, nobody orders other memory by it.
#[derive(Debug, Default)]
pub struct AudioStats {
    blocks: AtomicU64,
    device_xruns: AtomicU64,
    rt: AtomicU64,
}

impl AudioStats {
    /// Fresh counters, realtime state [`RtState::NotRequested`].
    pub fn new() -> Arc<AudioStats> {
        Arc::new(AudioStats::default())
    }

    pub(crate) fn add_block(&self) {
        // Relaxed: an independent counter (see the type's comment).
        self.blocks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_xrun(&self) {
        // Relaxed: an independent counter.
        self.device_xruns.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_rt(&self, state: RtState) {
        // Relaxed: a self-contained value; readers only display it.
        self.rt.store(state.encode(), Ordering::Relaxed);
    }

    /// Blocks handed to the processor so far.
    pub fn blocks(&self) -> u64 {
        self.blocks.load(Ordering::Relaxed)
    }

    /// Device xruns: stream errors of kind xrun reported by cpal (ALSA under/overruns,
    /// JACK's xrun callback), or for the null backend cycles that ended past the next
    /// deadline.
    pub fn device_xruns(&self) -> u64 {
        self.device_xruns.load(Ordering::Relaxed)
    }

    /// Whether the audio thread runs SCHED_FIFO, and why not.
    pub fn realtime(&self) -> RtState {
        RtState::decode(self.rt.load(Ordering::Relaxed))
    }
}

/// What to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// The stream shape.
    pub format: StreamFormat,
    /// `cpal`, `null` or `auto` (`offline` is not a clocked backend: see [`offline`]).
    pub backend: Backend,
    /// Device name for `cpal`; `None` is the host's default output device.
    pub device: Option<String>,
    /// Which cpal host `cpal` and `auto` use.
    pub host: device::HostChoice,
    /// SCHED_FIFO priority for the audio thread, `None` for normal scheduling.
    pub realtime: Option<u8>,
}

/// Why no stream runs.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The device stream did not open (only for `backend = "cpal"`; `auto` falls back).
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    /// The null clock thread did not start.
    #[error("cannot start the null backend's clock thread: {0}")]
    Null(std::io::Error),
    /// The format is unusable.
    #[error("bad stream format: {0}")]
    Format(String),
    /// `offline` has no clock to open.
    #[error(
        "the offline backend has no clock; use `slotpool render` (or `--backend null` for a clocked run without a device)"
    )]
    Offline,
}

/// A running clocked backend. Dropping it stops it too; [`Running::stop`] also joins.
#[derive(Debug)]
pub enum Running {
    /// The null clock thread.
    Null(null::NullStream<Box<dyn BlockProcessor>>),
    /// A cpal stream.
    Device(device::DeviceStream),
}

impl Running {
    /// The backend's counters.
    pub fn stats(&self) -> &Arc<AudioStats> {
        match self {
            Running::Null(s) => s.stats(),
            Running::Device(s) => s.stats(),
        }
    }

    /// One line saying what runs (`null clock, 48000 Hz, 128 frames` / `cpal ALSA "default"`).
    pub fn describe(&self) -> String {
        match self {
            Running::Null(s) => s.describe(),
            Running::Device(s) => s.describe(),
        }
    }

    /// Stops the stream and drops the processor (which drops any record tap in it, so
    /// the recording's writer can finish).
    pub fn stop(self) {
        match self {
            Running::Null(s) => drop(s.stop()),
            Running::Device(s) => s.stop(),
        }
    }
}

/// Opens the backend `opts` asks for and starts driving `processor`.
///
/// With [`Backend::Auto`], when no device stream opens, writes ONE line to `notice`
/// (which device, why, and that the null backend runs instead) and starts `null`.
pub fn open(
    opts: &OpenOptions,
    processor: Box<dyn BlockProcessor>,
    notice: &mut dyn fmt::Write,
) -> Result<Running, OpenError> {
    opts.format.validate().map_err(OpenError::Format)?;
    let start_null = |processor| {
        null::NullStream::start(opts.format, processor, opts.realtime)
            .map(Running::Null)
            .map_err(OpenError::Null)
    };
    match opts.backend {
        Backend::Null => start_null(processor),
        Backend::Offline => Err(OpenError::Offline),
        Backend::Cpal => device::DeviceStream::open(
            opts.host,
            opts.device.as_deref(),
            opts.format,
            opts.realtime,
            processor,
        )
        .map(Running::Device)
        .map_err(|(e, _)| OpenError::Device(e)),
        Backend::Auto => match device::DeviceStream::open(
            opts.host,
            opts.device.as_deref(),
            opts.format,
            opts.realtime,
            processor,
        ) {
            Ok(s) => Ok(Running::Device(s)),
            Err((e, processor)) => {
                // One line, whatever the writer; a failing writer must not stop the audio.
                let _ = writeln!(
                    notice,
                    "slotpool: no audio device ({e}); using the null backend (real-time clock, output discarded)"
                );
                start_null(processor)
            }
        },
    }
}

/// A live run's audio: the clocked backend plus, with `--record`, the recording.
#[derive(Debug)]
pub struct LiveAudio {
    running: Running,
    recording: Option<record::Recording>,
}

/// How much audio the record ring holds before the audio thread starts dropping blocks.
pub const RECORD_BUFFER: Duration = Duration::from_secs(2);

impl LiveAudio {
    /// Opens the backend (as [`open`]) for `processor`; with `record = Some(path)` its
    /// master output is also written to that WAV file. Errors name the file or device.
    pub fn start(
        opts: &OpenOptions,
        processor: Box<dyn BlockProcessor>,
        record: Option<&Path>,
        notice: &mut dyn fmt::Write,
    ) -> anyhow::Result<LiveAudio> {
        let (processor, recording) = match record {
            None => (processor, None),
            Some(path) => {
                let (recording, tap) = record::Recording::start(path, opts.format, RECORD_BUFFER)?;
                let p: Box<dyn BlockProcessor> = Box::new(record::Recorded::new(processor, tap));
                (p, Some(recording))
            }
        };
        let running = open(opts, processor, notice)?;
        Ok(LiveAudio { running, recording })
    }

    /// The backend.
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// Stops the backend, then finishes the recording (if any) and says what it holds.
    pub fn stop(self) -> anyhow::Result<Option<record::RecordReport>> {
        self.running.stop();
        match self.recording {
            None => Ok(None),
            Some(r) => Ok(Some(r.finish()?)),
        }
    }
}
