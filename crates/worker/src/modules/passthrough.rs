//! `passthrough`: output = input (output channel `c` reads input channel `c % channels_in`).

use crate::processor::{AudioIn, AudioOut, ParamSpec, ProcessConfig, ProcessContext, Processor};

/// Parameter table of [`Passthrough`] (empty).
pub const PARAMS: &[ParamSpec] = &[];

/// Copies its input to its output.
#[derive(Debug, Clone, Default)]
pub struct Passthrough;

impl Processor for Passthrough {
    fn params(&self) -> &[ParamSpec] {
        PARAMS
    }

    fn prepare(&mut self, _config: &ProcessConfig) {}

    fn process(&mut self, input: &AudioIn<'_>, output: &mut AudioOut<'_>, _ctx: &ProcessContext) {
        output.copy_from(input);
    }

    fn set_param(&mut self, _id: u32, _value: f32) {}

    fn reset(&mut self) {}
}
