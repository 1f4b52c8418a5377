//! `gain`: multiplies the input by a gain given in decibels.

use crate::processor::Processor;
use crate::processor::{AudioIn, AudioOut, ParamKind, ParamSpec, ProcessConfig, ProcessContext};
use crate::smooth::{DEFAULT_RAMP_SECONDS, Smoother};

/// Parameter ids of [`Gain`].
pub mod param {
    /// Gain in dB; the bottom of the range (-96 dB) means silence.
    pub const GAIN_DB: u32 = 0;
}

/// Parameter table of [`Gain`].
pub const PARAMS: &[ParamSpec] = &[ParamSpec {
    id: param::GAIN_DB,
    name: "gain_db",
    unit: "dB",
    min: -96.0,
    max: 24.0,
    default: 0.0,
    kind: ParamKind::Continuous,
}];

/// Linear factor for `db`; the floor of the range maps to exactly zero.
pub fn db_to_linear(db: f32) -> f32 {
    if db <= PARAMS[0].min {
        0.0
    } else {
        10.0_f32.powf(db / 20.0)
    }
}

/// Gain stage; the linear factor is what glides, so a fade is a straight line in amplitude.
#[derive(Debug, Clone)]
pub struct Gain {
    gain: Smoother,
}

impl Default for Gain {
    fn default() -> Self {
        Self::new()
    }
}

impl Gain {
    /// Unity gain.
    pub fn new() -> Self {
        Self {
            gain: Smoother::new(db_to_linear(PARAMS[0].default), 0),
        }
    }
}

impl Processor for Gain {
    fn params(&self) -> &[ParamSpec] {
        PARAMS
    }

    fn prepare(&mut self, config: &ProcessConfig) {
        self.gain.jump(self.gain.target());
        self.gain.set_ramp_len(Smoother::ramp_len_for(
            config.sample_rate,
            DEFAULT_RAMP_SECONDS,
        ));
    }

    fn process(&mut self, input: &AudioIn<'_>, output: &mut AudioOut<'_>, _ctx: &ProcessContext) {
        let frames = output.frames();
        let channels = output.channels();
        let data = output.as_mut_slice();
        if !self.gain.is_smoothing() {
            let g = self.gain.current();
            for c in 0..channels {
                let src = input.channel_for_output(c);
                for (o, x) in data[c * frames..(c + 1) * frames].iter_mut().zip(src) {
                    *o = x * g;
                }
            }
            return;
        }
        for i in 0..frames {
            let g = self.gain.next_value();
            for c in 0..channels {
                data[c * frames + i] = input.channel_for_output(c)[i] * g;
            }
        }
    }

    fn set_param(&mut self, id: u32, value: f32) {
        if id == param::GAIN_DB {
            self.gain.set_target(db_to_linear(value));
        }
    }

    fn reset(&mut self) {}
}
