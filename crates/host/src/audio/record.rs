//! `--record FILE.wav`: a tap on the master output in run mode.
//!
//! The audio thread copies each output block into a wait-free SPSC ring (rtrb); a writer
//! thread drains it into a 32-bit float WAV file (hound). The audio thread never waits:
//! when the ring has no room for a whole block (the writer fell behind, say on a slow
//! disk), the block is dropped and counted, and the count is reported when the recording
//! is finished. A dropped block is never split: the file stays frame-aligned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::offline::{WavError, WavSink};
use super::{BlockProcessor, StreamFormat};

/// How long the writer sleeps when the ring is empty: short against the ring's capacity
/// (seconds), long enough to cost nothing.
const WRITER_NAP: Duration = Duration::from_millis(5);

/// The audio-thread end of a recording: push blocks with [`RecordTap::push_block`].
pub struct RecordTap {
    producer: rtrb::Producer<f32>,
    block_len: usize,
    dropped_blocks: Arc<AtomicU64>,
}

impl std::fmt::Debug for RecordTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordTap")
            .field("block_len", &self.block_len)
            .field("dropped_blocks", &self.dropped_blocks)
            .finish_non_exhaustive()
    }
}

impl RecordTap {
    /// Copies one planar block into the ring, or drops it when there is no room. Never
    /// blocks, never allocates. A block of the wrong length is dropped too.
    pub fn push_block(&mut self, planar: &[f32]) {
        if planar.len() != self.block_len || self.producer.push_entire_slice(planar).is_err() {
            // Relaxed: an independent counter, read after the writer thread was joined.
            self.dropped_blocks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The control-thread end of a recording: the writer thread.
#[derive(Debug)]
pub struct Recording {
    path: PathBuf,
    block_frames: usize,
    dropped_blocks: Arc<AtomicU64>,
    thread: JoinHandle<Result<usize, WavError>>,
}

/// What a finished recording holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordReport {
    /// Frames in the file.
    pub frames_written: usize,
    /// Frames the audio thread dropped because the writer fell behind.
    pub frames_dropped: u64,
}

impl Recording {
    /// Creates `path` and starts the writer thread; the ring holds `buffer` of audio.
    /// Returns the tap for the audio thread.
    pub fn start(
        path: &Path,
        format: StreamFormat,
        buffer: Duration,
    ) -> Result<(Recording, RecordTap), WavError> {
        let mut sink = WavSink::create(path, format)?;
        let block_len = format.block_len();
        let blocks = (buffer.as_secs_f64() / format.period().as_secs_f64().max(1e-9)).ceil();
        let blocks = (blocks as usize).clamp(4, 1 << 16);
        let (producer, mut consumer) = rtrb::RingBuffer::<f32>::new(blocks * block_len);
        let dropped_blocks = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("slotpool-record".into())
            .spawn(move || {
                let mut block = vec![0.0f32; block_len];
                loop {
                    // Check abandonment before popping: a producer dropped after this
                    // check still gets its last blocks written by the next round.
                    let abandoned = consumer.is_abandoned();
                    let mut wrote = false;
                    while consumer.pop_entire_slice(&mut block).is_ok() {
                        sink.write_planar(&block)?;
                        wrote = true;
                    }
                    if abandoned {
                        break;
                    }
                    if !wrote {
                        std::thread::sleep(WRITER_NAP);
                    }
                }
                sink.finish()
            })
            .map_err(|e| WavError {
                path: path.to_path_buf(),
                source: hound::Error::IoError(e),
            })?;
        Ok((
            Recording {
                path: path.to_path_buf(),
                block_frames: format.block_frames,
                dropped_blocks: Arc::clone(&dropped_blocks),
                thread,
            },
            RecordTap {
                producer,
                block_len,
                dropped_blocks,
            },
        ))
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the writer to drain the ring and close the file. Call it after the tap
    /// is dropped (stop the stream first); until then the writer keeps waiting for blocks.
    pub fn finish(self) -> Result<RecordReport, WavError> {
        let frames_written = match self.thread.join() {
            Ok(r) => r?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // Relaxed: the join above orders every increment before this load.
        let dropped = self.dropped_blocks.load(Ordering::Relaxed);
        Ok(RecordReport {
            frames_written,
            frames_dropped: dropped * self.block_frames as u64,
        })
    }
}

/// A processor whose output is also pushed to a [`RecordTap`].
#[derive(Debug)]
pub struct Recorded<P> {
    inner: P,
    tap: RecordTap,
}

impl<P> Recorded<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, tap: RecordTap) -> Recorded<P> {
        Recorded { inner, tap }
    }

    /// Unwraps (dropping the tap ends the recording's input).
    pub fn into_inner(self) -> P {
        self.inner
    }
}

impl<P: BlockProcessor> BlockProcessor for Recorded<P> {
    fn process(&mut self, input: &[f32], output: &mut [f32]) {
        self.inner.process(input, output);
        self.tap.push_block(output);
    }
}
