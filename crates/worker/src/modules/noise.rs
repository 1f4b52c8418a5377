//! `noise`: deterministic white noise. Each output channel has its own generator, seeded
//! from `seed` and the channel index, so the same seed always gives the same samples.

use crate::processor::{AudioIn, AudioOut, ParamKind, ParamSpec, ProcessConfig, ProcessContext};
use crate::processor::{Processor, StateError};
use crate::smooth::{DEFAULT_RAMP_SECONDS, Smoother};

/// Parameter ids of [`Noise`].
pub mod param {
    /// Generator seed (a whole number); changing it restarts the sequence.
    pub const SEED: u32 = 0;
    /// Peak amplitude (linear).
    pub const AMP: u32 = 1;
}

/// Parameter table of [`Noise`].
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        id: param::SEED,
        name: "seed",
        unit: "",
        min: 0.0,
        // The largest integer an f32 holds exactly: seeds survive the wire unchanged.
        max: 16_777_215.0,
        default: 1.0,
        kind: ParamKind::Integer,
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

/// xorshift64* (Vigna): small, fast, and plenty for audio noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XorShift64Star(u64);

impl XorShift64Star {
    /// A generator for `(seed, stream)`; distinct streams give unrelated sequences.
    pub fn new(seed: u64, stream: u64) -> Self {
        let s = splitmix64(seed ^ splitmix64(stream.wrapping_add(0x632B_E59B_D9B4_E019)));
        Self(if s == 0 { 0x9E37_79B9_7F4A_7C15 } else { s })
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform sample in `[-1, 1)` with 24 bits of resolution.
    #[inline]
    pub fn next_bipolar(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / 8_388_608.0) - 1.0
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// White noise generator.
#[derive(Debug, Clone)]
pub struct Noise {
    seed: u64,
    amp: Smoother,
    generators: Vec<XorShift64Star>,
}

impl Default for Noise {
    fn default() -> Self {
        Self::new()
    }
}

impl Noise {
    /// Noise at the default parameters (seed 1, amplitude 0.25).
    pub fn new() -> Self {
        Self {
            seed: PARAMS[0].default as u64,
            amp: Smoother::new(PARAMS[1].default, 0),
            generators: Vec::new(),
        }
    }
}

impl Processor for Noise {
    fn params(&self) -> &[ParamSpec] {
        PARAMS
    }

    fn prepare(&mut self, config: &ProcessConfig) {
        self.amp.jump(self.amp.target());
        self.amp.set_ramp_len(Smoother::ramp_len_for(
            config.sample_rate,
            DEFAULT_RAMP_SECONDS,
        ));
        self.generators = vec![XorShift64Star::new(self.seed, 0); config.channels_out];
        self.reset();
    }

    fn process(&mut self, _input: &AudioIn<'_>, output: &mut AudioOut<'_>, _ctx: &ProcessContext) {
        let frames = output.frames();
        let data = output.as_mut_slice();
        for i in 0..frames {
            let amp = self.amp.next_value();
            for (c, generator) in self.generators.iter_mut().enumerate() {
                data[c * frames + i] = generator.next_bipolar() * amp;
            }
        }
    }

    fn set_param(&mut self, id: u32, value: f32) {
        match id {
            param::SEED => {
                self.seed = value as u64;
                self.reset();
            }
            param::AMP => self.amp.set_target(value),
            _ => {}
        }
    }

    fn reset(&mut self) {
        for (c, generator) in self.generators.iter_mut().enumerate() {
            *generator = XorShift64Star::new(self.seed, c as u64);
        }
    }

    fn save_state(&self) -> Option<Vec<u8>> {
        Some(
            self.generators
                .iter()
                .flat_map(|g| g.0.to_le_bytes())
                .collect(),
        )
    }

    fn load_state(&mut self, state: &[u8]) -> Result<(), StateError> {
        if state.len() != self.generators.len() * 8 {
            return Err(StateError::Malformed("noise state is 8 bytes per channel"));
        }
        let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().expect("chunk of 8"));
        if state.chunks_exact(8).any(|b| word(b) == 0) {
            return Err(StateError::Malformed("noise generator state is zero"));
        }
        for (g, bytes) in self.generators.iter_mut().zip(state.chunks_exact(8)) {
            g.0 = word(bytes);
        }
        Ok(())
    }
}
