//! `delay`: a feedback delay with a dry/wet mix. The delay time glides (read with linear
//! interpolation), so changing it bends the pitch briefly instead of clicking.

use crate::processor::Processor;
use crate::processor::{AudioIn, AudioOut, ParamKind, ParamSpec, ProcessConfig, ProcessContext};
use crate::smooth::{DEFAULT_RAMP_SECONDS, Smoother};

/// Parameter ids of [`Delay`].
pub mod param {
    /// Delay time in seconds (at least one sample).
    pub const TIME: u32 = 0;
    /// Share of the delayed signal fed back into the line.
    pub const FEEDBACK: u32 = 1;
    /// Wet share of the output (0 dry only, 1 wet only).
    pub const MIX: u32 = 2;
}

/// Longest delay time in seconds (sizes the line in `prepare`).
pub const MAX_TIME: f32 = 2.0;

/// Parameter table of [`Delay`].
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        id: param::TIME,
        name: "time",
        unit: "s",
        min: 0.0,
        max: MAX_TIME,
        default: 0.25,
        kind: ParamKind::Continuous,
    },
    ParamSpec {
        id: param::FEEDBACK,
        name: "feedback",
        unit: "",
        min: 0.0,
        max: 0.95,
        default: 0.3,
        kind: ParamKind::Continuous,
    },
    ParamSpec {
        id: param::MIX,
        name: "mix",
        unit: "",
        min: 0.0,
        max: 1.0,
        default: 0.5,
        kind: ParamKind::Continuous,
    },
];

/// Feedback delay, one line per output channel.
#[derive(Debug, Clone)]
pub struct Delay {
    time: Smoother,
    feedback: Smoother,
    mix: Smoother,
    sample_rate: f64,
    /// Each line holds `len` samples; `write` indexes the next sample to write in all lines.
    lines: Vec<Vec<f32>>,
    len: usize,
    write: usize,
}

impl Default for Delay {
    fn default() -> Self {
        Self::new()
    }
}

impl Delay {
    /// A delay at the default parameters (0.25 s, feedback 0.3, mix 0.5).
    pub fn new() -> Self {
        Self {
            time: Smoother::new(PARAMS[0].default, 0),
            feedback: Smoother::new(PARAMS[1].default, 0),
            mix: Smoother::new(PARAMS[2].default, 0),
            sample_rate: 48_000.0,
            lines: Vec::new(),
            len: 0,
            write: 0,
        }
    }
}

impl Processor for Delay {
    fn params(&self) -> &[ParamSpec] {
        PARAMS
    }

    fn prepare(&mut self, config: &ProcessConfig) {
        self.sample_rate = f64::from(config.sample_rate);
        let ramp = Smoother::ramp_len_for(config.sample_rate, DEFAULT_RAMP_SECONDS);
        for s in [&mut self.time, &mut self.feedback, &mut self.mix] {
            s.jump(s.target());
            s.set_ramp_len(ramp);
        }
        // Two spare samples: the interpolation reads index i and i + 1, and neither may be
        // the slot being written.
        self.len = (f64::from(MAX_TIME) * self.sample_rate).ceil() as usize + 2;
        self.lines = vec![vec![0.0; self.len]; config.channels_out];
        self.write = 0;
    }

    fn process(&mut self, input: &AudioIn<'_>, output: &mut AudioOut<'_>, _ctx: &ProcessContext) {
        let frames = output.frames();
        let data = output.as_mut_slice();
        let len = self.len;
        let max_delay = (len - 2) as f64;
        for i in 0..frames {
            let delay =
                (f64::from(self.time.next_value()) * self.sample_rate).clamp(1.0, max_delay);
            let feedback = self.feedback.next_value();
            let mix = self.mix.next_value();
            // read position = write - delay, kept non-negative by adding len first
            let pos = (self.write + len) as f64 - delay;
            let whole = pos.floor();
            let frac = (pos - whole) as f32;
            let i0 = whole as usize % len;
            let i1 = (i0 + 1) % len;
            debug_assert!(i0 != self.write && (i1 != self.write || frac == 0.0));
            for (c, line) in self.lines.iter_mut().enumerate() {
                let x = input.channel_for_output(c)[i];
                let wet = line[i0] + (line[i1] - line[i0]) * frac;
                line[self.write] = x + wet * feedback;
                data[c * frames + i] = x * (1.0 - mix) + wet * mix;
            }
            self.write = (self.write + 1) % len;
        }
    }

    fn set_param(&mut self, id: u32, value: f32) {
        match id {
            param::TIME => self.time.set_target(value),
            param::FEEDBACK => self.feedback.set_target(value),
            param::MIX => self.mix.set_target(value),
            _ => {}
        }
    }

    fn reset(&mut self) {
        for line in &mut self.lines {
            line.fill(0.0);
        }
        self.write = 0;
    }
}
