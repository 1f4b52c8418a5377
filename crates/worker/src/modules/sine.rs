//! `sine`: a sine oscillator. Ignores its input; every output channel carries the same wave.

use crate::processor::{AudioIn, AudioOut, ParamKind, ParamSpec, ProcessConfig, ProcessContext};
use crate::processor::{Processor, StateError};
use crate::smooth::{DEFAULT_RAMP_SECONDS, Smoother};

/// Parameter ids of [`Sine`].
pub mod param {
    /// Frequency in Hz.
    pub const FREQ: u32 = 0;
    /// Peak amplitude (linear).
    pub const AMP: u32 = 1;
}

/// Parameter table of [`Sine`].
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        id: param::FREQ,
        name: "freq",
        unit: "Hz",
        min: 0.0,
        max: 24000.0,
        default: 440.0,
        kind: ParamKind::Continuous,
    },
    ParamSpec {
        id: param::AMP,
        name: "amp",
        unit: "",
        min: 0.0,
        max: 1.0,
        default: 0.25,
        kind: ParamKind::Continuous,
    },
];

/// Sine oscillator; the phase is kept in `f64` cycles so long runs do not drift.
#[derive(Debug, Clone)]
pub struct Sine {
    freq: Smoother,
    amp: Smoother,
    phase: f64,
    sample_rate: f64,
}

impl Default for Sine {
    fn default() -> Self {
        Self::new()
    }
}

impl Sine {
    /// A sine at the default parameters (440 Hz, amplitude 0.25).
    pub fn new() -> Self {
        Self {
            freq: Smoother::new(PARAMS[0].default, 0),
            amp: Smoother::new(PARAMS[1].default, 0),
            phase: 0.0,
            sample_rate: 48_000.0,
        }
    }
}

impl Processor for Sine {
    fn params(&self) -> &[ParamSpec] {
        PARAMS
    }

    fn prepare(&mut self, config: &ProcessConfig) {
        self.sample_rate = f64::from(config.sample_rate);
        let ramp = Smoother::ramp_len_for(config.sample_rate, DEFAULT_RAMP_SECONDS);
        for s in [&mut self.freq, &mut self.amp] {
            s.jump(s.target());
            s.set_ramp_len(ramp);
        }
        self.reset();
    }

    fn process(&mut self, _input: &AudioIn<'_>, output: &mut AudioOut<'_>, _ctx: &ProcessContext) {
        let frames = output.frames();
        let data = output.as_mut_slice();
        let (first, rest) = data.split_at_mut(frames);
        for sample in first.iter_mut() {
            let freq = f64::from(self.freq.next_value());
            let amp = self.amp.next_value();
            *sample = (self.phase * std::f64::consts::TAU).sin() as f32 * amp;
            self.phase += freq / self.sample_rate;
            self.phase -= self.phase.floor();
        }
        for channel in rest.chunks_exact_mut(frames) {
            channel.copy_from_slice(first);
        }
    }

    fn set_param(&mut self, id: u32, value: f32) {
        match id {
            param::FREQ => self.freq.set_target(value),
            param::AMP => self.amp.set_target(value),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.phase = 0.0;
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        Some(self.phase.to_le_bytes().to_vec())
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), StateError> {
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| StateError::Malformed("sine state is 8 bytes (the phase)"))?;
        let phase = f64::from_le_bytes(bytes);
        if !(0.0..1.0).contains(&phase) {
            return Err(StateError::Malformed("sine phase outside 0..1"));
        }
        self.phase = phase;
        Ok(())
    }
}
