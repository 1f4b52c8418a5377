//! `wavplay`: plays a WAV file (read whole with hound when the module is built), looped
//! or once. Ignores its input. Output channel `c` plays file channel `c % file_channels`.
//! Samples play at the file's own rate: a file recorded at another rate than the engine's
//! plays faster or slower (no resampling).

use std::path::{Path, PathBuf};

use crate::processor::{AudioIn, AudioOut, ParamKind, ParamSpec, ProcessConfig, ProcessContext};
use crate::processor::{Processor, StateError};
use crate::smooth::{DEFAULT_RAMP_SECONDS, Smoother};

/// Parameter ids of [`WavPlay`].
pub mod param {
    /// 1: start again at the end; 0: play once, then silence.
    pub const LOOP: u32 = 0;
    /// Playback gain (linear).
    pub const AMP: u32 = 1;
}

/// Parameter table of [`WavPlay`].
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        id: param::LOOP,
        name: "loop",
        unit: "",
        min: 0.0,
        max: 1.0,
        default: 1.0,
        kind: ParamKind::Bool,
    },
    ParamSpec {
        id: param::AMP,
        name: "amp",
        unit: "",
        min: 0.0,
        max: 4.0,
        default: 1.0,
        kind: ParamKind::Continuous,
    },
];

/// Why a WAV file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("cannot play {path}: {reason}")]
pub struct WavError {
    /// The file.
    pub path: PathBuf,
    /// What hound said.
    pub reason: String,
}

/// A WAV player.
#[derive(Debug, Clone)]
pub struct WavPlay {
    /// Planar: `channels[c][frame]`, every channel the same length.
    channels: Vec<Vec<f32>>,
    sample_rate: u32,
    looping: bool,
    amp: Smoother,
    position: usize,
}

impl WavPlay {
    /// Reads the whole of `path` (integer PCM of any bit depth up to 32, or 32-bit float).
    pub fn open(path: &Path) -> Result<Self, WavError> {
        let err = |reason: String| WavError {
            path: path.to_path_buf(),
            reason,
        };
        let reader = hound::WavReader::open(path).map_err(|e| err(e.to_string()))?;
        let spec = reader.spec();
        let samples: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => reader
                .into_samples::<f32>()
                .collect::<Result<_, _>>()
                .map_err(|e| err(e.to_string()))?,
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1_u64 << (spec.bits_per_sample - 1)) as f64;
                reader
                    .into_samples::<i32>()
                    .map(|s| s.map(|v| (f64::from(v) * scale) as f32))
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(e.to_string()))?
            }
        };
        Ok(Self::from_interleaved(
            &samples,
            usize::from(spec.channels),
            spec.sample_rate,
        ))
    }

    /// A player over interleaved samples already in memory.
    ///
    /// # Panics
    /// If `channels` is 0.
    pub fn from_interleaved(samples: &[f32], channels: usize, sample_rate: u32) -> Self {
        assert!(channels > 0, "a WAV file has at least one channel");
        let frames = samples.len() / channels;
        let planar = (0..channels)
            .map(|c| (0..frames).map(|f| samples[f * channels + c]).collect())
            .collect();
        Self {
            channels: planar,
            sample_rate,
            looping: PARAMS[0].default >= 0.5,
            amp: Smoother::new(PARAMS[1].default, 0),
            position: 0,
        }
    }

    /// Frames in the file.
    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// The file's sample rate.
    pub fn file_sample_rate(&self) -> u32 {
        self.sample_rate
    }
}

impl Processor for WavPlay {
    fn params(&self) -> &[ParamSpec] {
        PARAMS
    }

    fn prepare(&mut self, config: &ProcessConfig) {
        self.amp.jump(self.amp.target());
        self.amp.set_ramp_len(Smoother::ramp_len_for(
            config.sample_rate,
            DEFAULT_RAMP_SECONDS,
        ));
        self.reset();
    }

    fn process(&mut self, _input: &AudioIn<'_>, output: &mut AudioOut<'_>, _ctx: &ProcessContext) {
        let frames = output.frames();
        let total = self.frames();
        let data = output.as_mut_slice();
        for i in 0..frames {
            let amp = self.amp.next_value();
            if self.position >= total && self.looping && total > 0 {
                self.position = 0;
            }
            let playing = self.position < total;
            for c in 0..data.len() / frames {
                data[c * frames + i] = if playing {
                    self.channels[c % self.channels.len()][self.position] * amp
                } else {
                    0.0
                };
            }
            if playing {
                self.position += 1;
            }
        }
    }

    fn set_param(&mut self, id: u32, value: f32) {
        match id {
            param::LOOP => self.looping = value >= 0.5,
            param::AMP => self.amp.set_target(value),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.position = 0;
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        Some((self.position as u64).to_le_bytes().to_vec())
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), StateError> {
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| StateError::Malformed("wavplay state is 8 bytes (the position)"))?;
        let position = u64::from_le_bytes(bytes);
        if position > self.frames() as u64 {
            return Err(StateError::Malformed(
                "wavplay position past the end of the file",
            ));
        }
        self.position = position as usize;
        Ok(())
    }
}
