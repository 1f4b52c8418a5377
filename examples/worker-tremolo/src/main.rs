//! A complete slotpool worker: a tremolo (5 Hz amplitude LFO) built on the worker SDK.
//! Run it as a slot program (`command = "worker-tremolo"` in a config); by hand it exits 2.
use slotpool_worker::{AudioIn, AudioOut, ParamSpec, ProcessConfig, ProcessContext, Processor};

// Debug builds: any allocation inside a process() call aborts.
#[global_allocator]
static ALLOC: slotpool_worker::GuardAllocator = slotpool_worker::GuardAllocator;

const PARAMS: &[ParamSpec] = &[ParamSpec::continuous(0, "depth", "", 0.0, 1.0, 0.5)];

struct Tremolo {
    depth: f32,
    phase: f32,
    step: f32,
}

impl Processor for Tremolo {
    fn params(&self) -> &[ParamSpec] {
        PARAMS
    }
    fn prepare(&mut self, config: &ProcessConfig) {
        self.step = 5.0 / config.sample_rate;
        self.reset();
    }
    fn process(&mut self, input: &AudioIn<'_>, output: &mut AudioOut<'_>, _: &ProcessContext) {
        let start = self.phase;
        for (c, out) in output.channels_mut().enumerate() {
            self.phase = start;
            for (y, x) in out.iter_mut().zip(input.channel_for_output(c)) {
                let lfo = 0.5 - 0.5 * (self.phase * std::f32::consts::TAU).cos();
                *y = x * (1.0 - self.depth * lfo);
                self.phase = (self.phase + self.step).fract();
            }
        }
    }
    fn set_param(&mut self, _id: u32, value: f32) {
        self.depth = value;
    }
    fn reset(&mut self) {
        self.phase = 0.0;
    }
}

fn main() -> std::process::ExitCode {
    slotpool_worker::run(Tremolo {
        depth: PARAMS[0].default,
        phase: 0.0,
        step: 0.0,
    })
}
