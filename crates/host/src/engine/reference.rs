//! The in-process reference renderer: the same [`Schedule`] as the engine, run by the
//! router's reference executor with every module linked in (built through the worker
//! crate's registry and driven through the worker SDK's [`Instance`], as the worker
//! process does). Each slot's block is sanitized as the engine sanitizes a worker's,
//! and an `async` slot outputs the block it computed one cycle earlier — so a render
//! through worker processes must equal this one bit for bit.

use slotpool_router::{Schedule, Workspace, execute};
use slotpool_worker::{Instance, ProcessConfig, Processor};

use super::BlockProcessor;
use super::patch::{BuildError, build_patch, module_spec};
use super::signal::sanitize;
use crate::config::{Config, SlotMode};

/// Why a config cannot be rendered in-process.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// See [`BuildError`].
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A slot runs a custom worker command: only built-in modules can be linked in.
    #[error(
        "program {0} runs a custom worker command; --in-process renders built-in modules only (render it through workers instead)"
    )]
    Custom(String),
}

#[derive(Debug)]
struct RefSlot {
    instance: Instance<Box<dyn Processor>>,
    mode: SlotMode,
    delayed: Vec<f32>,
    scratch: Vec<f32>,
}

/// The reference renderer of one config.
#[derive(Debug)]
pub struct Reference {
    schedule: Schedule,
    workspace: Workspace,
    slots: Vec<RefSlot>,
    cycle: u64,
}

impl Reference {
    /// Builds the patch and every module of `config` (allocates, may read files).
    ///
    /// # Errors
    /// A patch the router refuses, an unknown module, or a custom worker.
    pub fn new(config: &Config) -> Result<Self, ReferenceError> {
        let schedule = build_patch(config)?.compile();
        let frames = config.engine.block_frames as usize;
        let ch = config.engine.channels as usize;
        let mut slots = Vec::with_capacity(schedule.steps().len());
        for step in schedule.steps() {
            let program = step.name().program();
            let Some(p) = config.program(program) else {
                return Err(ReferenceError::Custom(program.to_string()));
            };
            let spec = module_spec(p)?.ok_or_else(|| ReferenceError::Custom(p.name.clone()))?;
            let processor = spec.build().map_err(|error| BuildError::Module {
                program: p.name.clone(),
                error,
            })?;
            let pc = ProcessConfig {
                sample_rate: config.engine.sample_rate as f32,
                block_frames: frames,
                channels_in: ch,
                channels_out: ch,
            };
            slots.push(RefSlot {
                instance: Instance::new(processor, pc),
                mode: p.slot.as_ref().map_or(SlotMode::Sync, |s| s.mode),
                delayed: vec![0.0; ch * frames],
                scratch: vec![0.0; ch * frames],
            });
        }
        Ok(Self {
            workspace: Workspace::for_schedule(&schedule, frames),
            schedule,
            slots,
            cycle: 0,
        })
    }
}

impl BlockProcessor for Reference {
    fn process(&mut self, input: &[f32], output: &mut [f32]) {
        self.cycle += 1;
        let cycle = self.cycle;
        let slots = &mut self.slots;
        let mut runner = |step: &slotpool_router::Step, inp: &[f32], out: &mut [f32]| {
            let Some(s) = slots.get_mut(step.index()) else {
                return;
            };
            match s.mode {
                SlotMode::Sync => {
                    s.instance.process(cycle, inp, out);
                    sanitize(out);
                }
                SlotMode::Async => {
                    s.instance.process(cycle, inp, &mut s.scratch);
                    sanitize(&mut s.scratch);
                    out.copy_from_slice(&s.delayed);
                    std::mem::swap(&mut s.delayed, &mut s.scratch);
                }
            }
        };
        if execute(
            &self.schedule,
            &mut self.workspace,
            &mut runner,
            input,
            output,
        )
        .is_err()
        {
            output.fill(0.0);
        }
    }
}
