//! `biquad`: a second-order filter after the RBJ Audio EQ Cookbook (lowpass, highpass,
//! bandpass with 0 dB peak, peaking EQ), transposed direct form II in `f64`.
//!
//! While `freq`, `q` or `gain_db` glide, the coefficients are recomputed every
//! [`COEFF_INTERVAL`] samples from the smoothed values.

use crate::processor::Processor;
use crate::processor::{AudioIn, AudioOut, ParamKind, ParamSpec, ProcessConfig, ProcessContext};
use crate::smooth::{DEFAULT_RAMP_SECONDS, Smoother};

/// Parameter ids of [`Biquad`].
pub mod param {
    /// Filter type: 0 lowpass, 1 highpass, 2 bandpass, 3 peak.
    pub const MODE: u32 = 0;
    /// Cut-off or centre frequency in Hz (limited to 0.49 × the sample rate).
    pub const FREQ: u32 = 1;
    /// Quality factor.
    pub const Q: u32 = 2;
    /// Gain of the peak filter in dB (unused by the other types).
    pub const GAIN_DB: u32 = 3;
}

/// Labels of the `mode` parameter, by value.
pub const MODES: &[&str] = &["lowpass", "highpass", "bandpass", "peak"];

/// Parameter table of [`Biquad`].
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        id: param::MODE,
        name: "mode",
        unit: "",
        min: 0.0,
        max: 3.0,
        default: 0.0,
        kind: ParamKind::Enum(MODES),
    },
    ParamSpec {
        id: param::FREQ,
        name: "freq",
        unit: "Hz",
        min: 10.0,
        max: 20_000.0,
        default: 1000.0,
        kind: ParamKind::Continuous,
    },
    ParamSpec {
        id: param::Q,
        name: "q",
        unit: "",
        min: 0.1,
        max: 24.0,
        default: std::f32::consts::FRAC_1_SQRT_2,
        kind: ParamKind::Continuous,
    },
    ParamSpec {
        id: param::GAIN_DB,
        name: "gain_db",
        unit: "dB",
        min: -24.0,
        max: 24.0,
        default: 0.0,
        kind: ParamKind::Continuous,
    },
];

/// Samples between coefficient updates while a parameter glides.
pub const COEFF_INTERVAL: usize = 16;

/// Filter type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 12 dB/octave lowpass.
    Lowpass,
    /// 12 dB/octave highpass.
    Highpass,
    /// Bandpass, 0 dB at the centre frequency.
    Bandpass,
    /// Peaking EQ.
    Peak,
}

impl Mode {
    fn from_value(v: f32) -> Self {
        match v as u32 {
            0 => Self::Lowpass,
            1 => Self::Highpass,
            2 => Self::Bandpass,
            _ => Self::Peak,
        }
    }
}

/// Normalised coefficients (`a0 = 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    /// Feed-forward.
    pub b0: f64,
    /// Feed-forward.
    pub b1: f64,
    /// Feed-forward.
    pub b2: f64,
    /// Feedback.
    pub a1: f64,
    /// Feedback.
    pub a2: f64,
}

impl Coefficients {
    /// RBJ cookbook coefficients.
    pub fn rbj(mode: Mode, sample_rate: f64, freq: f64, q: f64, gain_db: f64) -> Self {
        let freq = freq.clamp(1.0, 0.49 * sample_rate);
        let w0 = std::f64::consts::TAU * freq / sample_rate;
        let (sin_w0, cos_w0) = w0.sin_cos();
        let alpha = sin_w0 / (2.0 * q);
        let a = 10.0_f64.powf(gain_db / 40.0);
        let (b0, b1, b2, a0, a1, a2) = match mode {
            Mode::Lowpass => {
                let b1 = 1.0 - cos_w0;
                (
                    b1 / 2.0,
                    b1,
                    b1 / 2.0,
                    1.0 + alpha,
                    -2.0 * cos_w0,
                    1.0 - alpha,
                )
            }
            Mode::Highpass => {
                let b1 = 1.0 + cos_w0;
                (
                    b1 / 2.0,
                    -b1,
                    b1 / 2.0,
                    1.0 + alpha,
                    -2.0 * cos_w0,
                    1.0 - alpha,
                )
            }
            Mode::Bandpass => (alpha, 0.0, -alpha, 1.0 + alpha, -2.0 * cos_w0, 1.0 - alpha),
            Mode::Peak => (
                1.0 + alpha * a,
                -2.0 * cos_w0,
                1.0 - alpha * a,
                1.0 + alpha / a,
                -2.0 * cos_w0,
                1.0 - alpha / a,
            ),
        };
        Self {
            b0: b0 / a0,
            b1: b1 / a0,
            b2: b2 / a0,
            a1: a1 / a0,
            a2: a2 / a0,
        }
    }

    /// Magnitude of the response at `freq` (for tests and displays).
    pub fn magnitude_at(&self, sample_rate: f64, freq: f64) -> f64 {
        let w = std::f64::consts::TAU * freq / sample_rate;
        // H(e^jw) = (b0 + b1 z^-1 + b2 z^-2) / (1 + a1 z^-1 + a2 z^-2)
        let (s1, c1) = w.sin_cos();
        let (s2, c2) = (2.0 * w).sin_cos();
        let num = (
            self.b0 + self.b1 * c1 + self.b2 * c2,
            -(self.b1 * s1 + self.b2 * s2),
        );
        let den = (
            1.0 + self.a1 * c1 + self.a2 * c2,
            -(self.a1 * s1 + self.a2 * s2),
        );
        (num.0.hypot(num.1)) / (den.0.hypot(den.1))
    }
}

/// Biquad filter, one state pair per output channel.
#[derive(Debug, Clone)]
pub struct Biquad {
    mode: Mode,
    freq: Smoother,
    q: Smoother,
    gain_db: Smoother,
    sample_rate: f64,
    coeffs: Coefficients,
    state: Vec<[f64; 2]>,
}

impl Default for Biquad {
    fn default() -> Self {
        Self::new()
    }
}

impl Biquad {
    /// A lowpass at 1 kHz, Q 0.707.
    pub fn new() -> Self {
        let mut b = Self {
            mode: Mode::from_value(PARAMS[0].default),
            freq: Smoother::new(PARAMS[1].default, 0),
            q: Smoother::new(PARAMS[2].default, 0),
            gain_db: Smoother::new(PARAMS[3].default, 0),
            sample_rate: 48_000.0,
            coeffs: Coefficients {
                b0: 1.0,
                b1: 0.0,
                b2: 0.0,
                a1: 0.0,
                a2: 0.0,
            },
            state: Vec::new(),
        };
        b.update_coeffs();
        b
    }

    /// The coefficients in use.
    pub fn coefficients(&self) -> Coefficients {
        self.coeffs
    }

    fn update_coeffs(&mut self) {
        self.coeffs = Coefficients::rbj(
            self.mode,
            self.sample_rate,
            f64::from(self.freq.current()),
            f64::from(self.q.current()),
            f64::from(self.gain_db.current()),
        );
    }

    fn smoothing(&self) -> bool {
        self.freq.is_smoothing() || self.q.is_smoothing() || self.gain_db.is_smoothing()
    }
}

impl Processor for Biquad {
    fn params(&self) -> &[ParamSpec] {
        PARAMS
    }

    fn prepare(&mut self, config: &ProcessConfig) {
        self.sample_rate = f64::from(config.sample_rate);
        let ramp = Smoother::ramp_len_for(config.sample_rate, DEFAULT_RAMP_SECONDS);
        for s in [&mut self.freq, &mut self.q, &mut self.gain_db] {
            s.jump(s.target());
            s.set_ramp_len(ramp);
        }
        self.state = vec![[0.0; 2]; config.channels_out];
        self.update_coeffs();
    }

    fn process(&mut self, input: &AudioIn<'_>, output: &mut AudioOut<'_>, _ctx: &ProcessContext) {
        let frames = output.frames();
        let channels = output.channels();
        let data = output.as_mut_slice();
        let mut start = 0;
        while start < frames {
            let len = if self.smoothing() {
                let n = COEFF_INTERVAL.min(frames - start);
                for s in [&mut self.freq, &mut self.q, &mut self.gain_db] {
                    s.advance(n as u32);
                }
                self.update_coeffs();
                n
            } else {
                frames - start
            };
            let k = self.coeffs;
            for c in 0..channels {
                let src = &input.channel_for_output(c)[start..start + len];
                let dst = &mut data[c * frames + start..c * frames + start + len];
                let [mut z1, mut z2] = self.state[c];
                for (y_out, &x) in dst.iter_mut().zip(src) {
                    let x = f64::from(x);
                    let y = k.b0 * x + z1;
                    z1 = k.b1 * x - k.a1 * y + z2;
                    z2 = k.b2 * x - k.a2 * y;
                    *y_out = y as f32;
                }
                self.state[c] = [z1, z2];
            }
            start += len;
        }
    }

    fn set_param(&mut self, id: u32, value: f32) {
        match id {
            param::MODE => {
                self.mode = Mode::from_value(value);
                self.update_coeffs();
            }
            param::FREQ => self.freq.set_target(value),
            param::Q => self.q.set_target(value),
            param::GAIN_DB => self.gain_db.set_target(value),
            _ => return,
        }
        if !self.smoothing() {
            // Not prepared yet (ramp length 0) or no change: the value applies now.
            self.update_coeffs();
        }
    }

    fn reset(&mut self) {
        self.state.fill([0.0; 2]);
    }
}
