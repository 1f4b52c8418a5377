//! The [`Processor`] trait: what a DSP module implements, and the types its calls see.
//!
//! # Lifecycle and threads
//!
//! | call | when | may allocate, lock, log? |
//! |---|---|---|
//! | [`Processor::params`] | any time | no (returns a borrowed table) |
//! | [`Processor::prepare`] | once before the first block, and again if the configuration changes | **yes** |
//! | [`Processor::process`] | once per block, on the worker's process loop | **no** (debug builds abort on any allocation) |
//! | [`Processor::set_param`] | between blocks, with a value already validated against [`ParamSpec`] | **no** |
//! | [`Processor::reset`] | between blocks (the host's `Reset` command) | **no** |
//! | [`Processor::save_state`] / [`Processor::load_state`] | off the process loop | yes |
//!
//! All calls come from one thread; a processor needs `Send` only so that it can be built on
//! one thread and run on another.

/// Engine settings a processor is prepared for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessConfig {
    /// Frames per second.
    pub sample_rate: f32,
    /// Frames in every block handed to [`Processor::process`].
    pub block_frames: usize,
    /// Channels of the input block.
    pub channels_in: usize,
    /// Channels of the output block.
    pub channels_out: usize,
}

impl ProcessConfig {
    /// Samples in one planar input block (`channels_in * block_frames`).
    pub fn input_samples(&self) -> usize {
        self.channels_in * self.block_frames
    }

    /// Samples in one planar output block (`channels_out * block_frames`).
    pub fn output_samples(&self) -> usize {
        self.channels_out * self.block_frames
    }
}

/// Per-block information passed to [`Processor::process`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessContext {
    /// The host's cycle number this block belongs to (the tag on the ring).
    pub cycle: u64,
    /// Blocks processed by this instance before this one (0 for the first block after
    /// `prepare`); unlike `cycle` it never jumps.
    pub block_index: u64,
    /// Frames per second.
    pub sample_rate: f32,
}

/// A planar block of audio read by a processor: channel `c` is `frames` consecutive samples
/// starting at `c * frames`.
#[derive(Clone, Copy, Debug)]
pub struct AudioIn<'a> {
    data: &'a [f32],
    frames: usize,
}

impl<'a> AudioIn<'a> {
    /// Wraps a planar buffer. `data.len()` must be a multiple of `frames` and `frames > 0`.
    ///
    /// # Panics
    /// If the length is not a whole number of channels (a programming error, not a runtime
    /// condition: the run loop sizes every buffer from the validated layout).
    pub fn new(data: &'a [f32], frames: usize) -> Self {
        assert!(
            frames > 0 && data.len().is_multiple_of(frames),
            "planar block of {} samples is not a whole number of {frames}-frame channels",
            data.len()
        );
        Self { data, frames }
    }

    /// Frames per channel.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.data.len() / self.frames
    }

    /// The samples of channel `c`.
    ///
    /// # Panics
    /// If `c >= self.channels()`.
    pub fn channel(&self, c: usize) -> &'a [f32] {
        &self.data[c * self.frames..(c + 1) * self.frames]
    }

    /// The input channel that feeds output channel `out_channel` under slotpool's channel
    /// rule: output channel `c` reads input channel `c % channels_in` (mono input feeds
    /// every output; extra input channels beyond the output count are ignored).
    pub fn channel_for_output(&self, out_channel: usize) -> &'a [f32] {
        self.channel(out_channel % self.channels())
    }

    /// The whole planar buffer.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }
}

/// A planar block of audio written by a processor (same shape rules as [`AudioIn`]).
#[derive(Debug)]
pub struct AudioOut<'a> {
    data: &'a mut [f32],
    frames: usize,
}

impl<'a> AudioOut<'a> {
    /// Wraps a planar buffer. `data.len()` must be a multiple of `frames` and `frames > 0`.
    ///
    /// # Panics
    /// If the length is not a whole number of channels.
    pub fn new(data: &'a mut [f32], frames: usize) -> Self {
        assert!(
            frames > 0 && data.len().is_multiple_of(frames),
            "planar block of {} samples is not a whole number of {frames}-frame channels",
            data.len()
        );
        Self { data, frames }
    }

    /// Frames per channel.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.data.len() / self.frames
    }

    /// The samples of channel `c`, writable.
    ///
    /// # Panics
    /// If `c >= self.channels()`.
    pub fn channel_mut(&mut self, c: usize) -> &mut [f32] {
        &mut self.data[c * self.frames..(c + 1) * self.frames]
    }

    /// Iterates over the channels, writable, in order.
    pub fn channels_mut(&mut self) -> std::slice::ChunksExactMut<'_, f32> {
        self.data.chunks_exact_mut(self.frames)
    }

    /// The whole planar buffer, writable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data
    }

    /// Writes silence to every channel.
    pub fn fill_silence(&mut self) {
        self.data.fill(0.0);
    }

    /// Copies `input` through under the channel rule of [`AudioIn::channel_for_output`].
    pub fn copy_from(&mut self, input: &AudioIn<'_>) {
        for (c, out) in self.data.chunks_exact_mut(self.frames).enumerate() {
            out.copy_from_slice(input.channel_for_output(c));
        }
    }
}

/// How a parameter's `f32` value is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Any value in `[min, max]`; changes are smoothed by the module.
    Continuous,
    /// Whole numbers in `[min, max]` (values are rounded); applied at once.
    Integer,
    /// `0.0` off, `1.0` on (any value `>= 0.5` is on); applied at once. Command-line
    /// spellings: `on|off|true|false|yes|no|1|0`.
    Bool,
    /// An index into the labels (values are rounded); applied at once. On the command line
    /// either the label or the index.
    Enum(&'static [&'static str]),
}

/// One parameter of a processor.
///
/// Parameter ids are the scheme of the whole project: **a module's parameters are numbered
/// 0, 1, 2… in the order of its table, and that numbering never changes** (new parameters
/// are appended). The id is what `Command::SetParam` and `Event::Param` carry on the wire;
/// the name is what configs and the command line use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamSpec {
    /// Wire id (the index in the module's table).
    pub id: u32,
    /// Name used in configs and on the command line (`[a-z0-9_]`, at most 32 bytes so it
    /// fits `Event::Param`).
    pub name: &'static str,
    /// Unit shown to users (`Hz`, `dB`, `s`, or empty).
    pub unit: &'static str,
    /// Smallest accepted value.
    pub min: f32,
    /// Largest accepted value.
    pub max: f32,
    /// Value before any `--param` or command.
    pub default: f32,
    /// How the value is interpreted.
    pub kind: ParamKind,
}

/// Why a parameter value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// No parameter has this id.
    #[error("no parameter has id {0}")]
    UnknownId(u32),
    /// NaN or infinite.
    #[error("value is not a finite number")]
    NotFinite,
}

impl ParamSpec {
    /// A continuous (smoothed) parameter: the common case, in one line.
    pub const fn continuous(
        id: u32,
        name: &'static str,
        unit: &'static str,
        min: f32,
        max: f32,
        default: f32,
    ) -> Self {
        Self {
            id,
            name,
            unit,
            min,
            max,
            default,
            kind: ParamKind::Continuous,
        }
    }

    /// Validates a value from the wire or a config: refuses NaN and infinities, clamps into
    /// `[min, max]`, rounds integer, bool and enum values. This is what reaches
    /// [`Processor::set_param`].
    pub fn sanitize(&self, value: f32) -> Result<f32, ParamError> {
        if !value.is_finite() {
            return Err(ParamError::NotFinite);
        }
        let v = value.clamp(self.min, self.max);
        Ok(match self.kind {
            ParamKind::Continuous => v,
            ParamKind::Integer | ParamKind::Enum(_) => v.round().clamp(self.min, self.max),
            ParamKind::Bool => {
                if v >= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
        })
    }

    /// Parses a command-line or config spelling of a value (a number, a bool word, or an
    /// enum label) and checks that it lies in range. Errors are user-facing sentences.
    pub fn parse_value(&self, text: &str) -> Result<f32, String> {
        let text = text.trim();
        let parsed = match self.kind {
            ParamKind::Bool => match text.to_ascii_lowercase().as_str() {
                "on" | "true" | "yes" | "1" => Some(1.0),
                "off" | "false" | "no" | "0" => Some(0.0),
                _ => None,
            },
            ParamKind::Enum(labels) => labels
                .iter()
                .position(|l| l.eq_ignore_ascii_case(text))
                .map(|i| i as f32)
                .or_else(|| text.parse::<u32>().ok().map(|i| i as f32)),
            ParamKind::Continuous | ParamKind::Integer => text.parse::<f32>().ok(),
        };
        let Some(value) = parsed.filter(|v| v.is_finite()) else {
            return Err(format!(
                "`{text}` is not a valid value for `{}`: expected {}",
                self.name,
                self.describe_range()
            ));
        };
        if value < self.min || value > self.max {
            return Err(format!(
                "`{text}` is out of range for `{}`: expected {}",
                self.name,
                self.describe_range()
            ));
        }
        if matches!(self.kind, ParamKind::Integer) && value.fract() != 0.0 {
            return Err(format!(
                "`{text}` is not a whole number; `{}` expects {}",
                self.name,
                self.describe_range()
            ));
        }
        Ok(value)
    }

    /// A human description of the accepted values, e.g. `a number in 20..=20000 Hz`.
    pub fn describe_range(&self) -> String {
        match self.kind {
            ParamKind::Continuous => format!(
                "a number in {}..={}{}{}",
                self.min,
                self.max,
                if self.unit.is_empty() { "" } else { " " },
                self.unit
            ),
            ParamKind::Integer => format!("a whole number in {}..={}", self.min, self.max),
            ParamKind::Bool => "on|off".to_string(),
            ParamKind::Enum(labels) => format!("one of {}", labels.join("|")),
        }
    }
}

/// Why [`Processor::load_state`] refused a state blob.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The processor does not save or restore state.
    #[error("this processor has no saveable state")]
    Unsupported,
    /// The blob was not written by this processor (or by an incompatible version).
    #[error("state blob is malformed: {0}")]
    Malformed(&'static str),
}

/// A DSP module. Implement this and hand it to [`crate::run`]: that is a complete worker.
///
/// Determinism is part of the contract: given the same `prepare` configuration, the same
/// parameter changes at the same block boundaries and the same input, `process` must write
/// bit-identical output, in a worker process and in-process (the engine's end-to-end test
/// compares the two). Use no clocks, no thread-dependent state and no randomness that is not
/// seeded from parameters.
pub trait Processor: Send {
    /// The parameter table; entry `i` must have `id == i` (see [`ParamSpec`]).
    fn params(&self) -> &[ParamSpec];

    /// Sizes buffers for `config`. Called before the first block; may allocate. Resets the
    /// processor's running state (as [`Processor::reset`]) but keeps parameter values.
    fn prepare(&mut self, config: &ProcessConfig);

    /// Computes one block. Real-time safe: must not allocate, lock, log, or block.
    /// `input` has `config.channels_in` channels and `output` `config.channels_out`, both of
    /// `config.block_frames` frames. The whole of `output` must be written.
    fn process(&mut self, input: &AudioIn<'_>, output: &mut AudioOut<'_>, ctx: &ProcessContext);

    /// Sets parameter `id` (already validated: a known id, a finite value inside the range,
    /// rounded for discrete kinds). Continuous parameters should glide to the new value
    /// over a few milliseconds rather than jump. Real-time safe.
    fn set_param(&mut self, id: u32, value: f32);

    /// Clears running state (phases, filter memories, delay lines, playback position) as
    /// if no block had been processed. Parameter values stay. Real-time safe.
    fn reset(&mut self);

    /// Serialises the processor's state (not its parameters) if it supports that.
    fn save_state(&self) -> Option<Vec<u8>> {
        None
    }

    /// Restores what [`Processor::save_state`] produced.
    fn load_state(&mut self, state: &[u8]) -> Result<(), StateError> {
        let _ = state;
        Err(StateError::Unsupported)
    }
}

impl std::fmt::Debug for dyn Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("dyn Processor")
            .field(
                "params",
                &self.params().iter().map(|p| p.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<P: Processor + ?Sized> Processor for Box<P> {
    fn params(&self) -> &[ParamSpec] {
        (**self).params()
    }
    fn prepare(&mut self, config: &ProcessConfig) {
        (**self).prepare(config);
    }
    fn process(&mut self, input: &AudioIn<'_>, output: &mut AudioOut<'_>, ctx: &ProcessContext) {
        (**self).process(input, output, ctx);
    }
    fn set_param(&mut self, id: u32, value: f32) {
        (**self).set_param(id, value);
    }
    fn reset(&mut self) {
        (**self).reset();
    }
    fn save_state(&self) -> Option<Vec<u8>> {
        (**self).save_state()
    }
    fn load_state(&mut self, state: &[u8]) -> Result<(), StateError> {
        (**self).load_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FREQ: ParamSpec = ParamSpec {
        id: 0,
        name: "freq",
        unit: "Hz",
        min: 20.0,
        max: 20000.0,
        default: 440.0,
        kind: ParamKind::Continuous,
    };
    const MODE: ParamSpec = ParamSpec {
        id: 1,
        name: "mode",
        unit: "",
        min: 0.0,
        max: 2.0,
        default: 0.0,
        kind: ParamKind::Enum(&["a", "b", "c"]),
    };
    const ON: ParamSpec = ParamSpec {
        id: 2,
        name: "loop",
        unit: "",
        min: 0.0,
        max: 1.0,
        default: 1.0,
        kind: ParamKind::Bool,
    };

    #[test]
    fn sanitize_clamps_rounds_and_refuses_nan() {
        assert_eq!(FREQ.sanitize(1e9), Ok(20000.0));
        assert_eq!(FREQ.sanitize(-5.0), Ok(20.0));
        assert_eq!(FREQ.sanitize(f32::NAN), Err(ParamError::NotFinite));
        assert_eq!(FREQ.sanitize(f32::INFINITY), Err(ParamError::NotFinite));
        assert_eq!(MODE.sanitize(1.4), Ok(1.0));
        assert_eq!(MODE.sanitize(7.0), Ok(2.0));
        assert_eq!(ON.sanitize(0.7), Ok(1.0));
        assert_eq!(ON.sanitize(0.2), Ok(0.0));
    }

    #[test]
    fn parse_value_accepts_labels_words_and_numbers() {
        assert_eq!(FREQ.parse_value("1000"), Ok(1000.0));
        assert_eq!(MODE.parse_value("B"), Ok(1.0));
        assert_eq!(MODE.parse_value("2"), Ok(2.0));
        assert_eq!(ON.parse_value("off"), Ok(0.0));
        assert_eq!(ON.parse_value("yes"), Ok(1.0));
    }

    #[test]
    fn parse_value_names_the_range_when_refusing() {
        let e = FREQ.parse_value("5").unwrap_err();
        assert!(
            e.contains("out of range") && e.contains("20..=20000 Hz"),
            "{e}"
        );
        let e = FREQ.parse_value("loud").unwrap_err();
        assert!(e.contains("not a valid value"), "{e}");
        let e = MODE.parse_value("d").unwrap_err();
        assert!(e.contains("one of a|b|c"), "{e}");
    }

    #[test]
    fn channel_rule_maps_outputs_onto_inputs_modulo() {
        let data = [1.0, 1.0, 2.0, 2.0];
        let input = AudioIn::new(&data, 2);
        assert_eq!(input.channels(), 2);
        assert_eq!(input.channel_for_output(0), &[1.0, 1.0]);
        assert_eq!(input.channel_for_output(3), &[2.0, 2.0]);
        let mut buf = [0.0; 6];
        let mut out = AudioOut::new(&mut buf, 2);
        out.copy_from(&input);
        assert_eq!(buf, [1.0, 1.0, 2.0, 2.0, 1.0, 1.0]);
    }
}
