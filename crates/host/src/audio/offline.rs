//! The `offline` driver: no clock, blocks as fast as the processor computes them, each
//! output block handed to a [`BlockSink`] (a WAV file for `slotpool render`). The input
//! is silence.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::{BlockProcessor, StreamFormat, guarded_process};

/// Where the offline driver puts each output block.
pub trait BlockSink {
    /// Why a block could not be written.
    type Error;
    /// Takes one planar block (`channels × block_frames`, channel-major).
    fn write_block(&mut self, planar: &[f32]) -> Result<(), Self::Error>;
}

/// Any `FnMut(&[f32]) -> Result<(), E>` is a sink (progress bars, collectors in tests).
impl<E, F: FnMut(&[f32]) -> Result<(), E>> BlockSink for F {
    type Error = E;
    fn write_block(&mut self, planar: &[f32]) -> Result<(), E> {
        self(planar)
    }
}

/// Runs `processor` for `blocks` blocks of `format`, as fast as it goes, handing every
/// output block to `sink`. Stops at the first sink error. Returns the blocks written.
pub fn run<P: BlockProcessor + ?Sized, S: BlockSink + ?Sized>(
    format: StreamFormat,
    processor: &mut P,
    blocks: u64,
    sink: &mut S,
) -> Result<u64, S::Error> {
    let input = vec![0.0f32; format.block_len()];
    let mut output = vec![0.0f32; format.block_len()];
    for _ in 0..blocks {
        guarded_process(processor, &input, &mut output);
        sink.write_block(&output)?;
    }
    Ok(blocks)
}

/// The number of blocks that cover `seconds` (rounded up, so the render is never short).
pub fn blocks_for_seconds(format: StreamFormat, seconds: f64) -> u64 {
    if !seconds.is_finite() || seconds <= 0.0 {
        return 0;
    }
    let frames = (seconds * f64::from(format.sample_rate)).ceil();
    (frames / format.block_frames as f64).ceil() as u64
}

/// Why a WAV file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WavError {
    /// The file.
    pub path: PathBuf,
    /// What hound said.
    #[source]
    pub source: hound::Error,
}

/// A 32-bit float WAV file fed planar blocks; interleaves them as it writes.
pub struct WavSink {
    path: PathBuf,
    channels: usize,
    frames: usize,
    writer: hound::WavWriter<BufWriter<File>>,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink")
            .field("path", &self.path)
            .field("channels", &self.channels)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl WavSink {
    /// Creates (truncates) `path` for `format`.
    pub fn create(path: &Path, format: StreamFormat) -> Result<WavSink, WavError> {
        let wrap = |source| WavError {
            path: path.to_path_buf(),
            source,
        };
        let channels =
            u16::try_from(format.channels).map_err(|_| wrap(hound::Error::Unsupported))?;
        let spec = hound::WavSpec {
            channels,
            sample_rate: format.sample_rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(wrap)?;
        Ok(WavSink {
            path: path.to_path_buf(),
            channels: format.channels,
            frames: 0,
            writer,
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Writes the header's final sizes and closes the file.
    pub fn finish(self) -> Result<usize, WavError> {
        let frames = self.frames;
        let path = self.path;
        self.writer
            .finalize()
            .map_err(|source| WavError { path, source })?;
        Ok(frames)
    }

    /// Appends one planar block.
    pub fn write_planar(&mut self, planar: &[f32]) -> Result<(), WavError> {
        let frames = planar.len() / self.channels.max(1);
        for i in 0..frames {
            for c in 0..self.channels {
                self.writer
                    .write_sample(planar[c * frames + i])
                    .map_err(|source| WavError {
                        path: self.path.clone(),
                        source,
                    })?;
            }
        }
        self.frames += frames;
        Ok(())
    }
}

impl BlockSink for WavSink {
    type Error = WavError;
    fn write_block(&mut self, planar: &[f32]) -> Result<(), WavError> {
        self.write_planar(planar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_requested_seconds() {
        let f = StreamFormat {
            sample_rate: 48_000,
            block_frames: 128,
            channels: 2,
        };
        assert_eq!(blocks_for_seconds(f, 1.0), 375);
        assert_eq!(blocks_for_seconds(f, 0.001), 1);
        assert_eq!(blocks_for_seconds(f, 0.0), 0);
        assert_eq!(blocks_for_seconds(f, f64::NAN), 0);
    }
}
