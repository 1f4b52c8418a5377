//! Running a [`Schedule`]: the [`Workspace`] of preallocated lanes, the mixing
//! primitives both executors share, and the reference executor [`execute`].
//!
//! An executor is the loop below; the engine replaces `runner.run` by "push the
//! input to the slot's ring, ring its doorbell" in the first pass and "wait for the
//! output (or fall back), copy it into `output_mut(step)`" in the second:
//!
//! ```
//! # use slotpool_router::*;
//! # fn run(step: &Step, input: &[f32], output: &mut [f32]) { output.fill(0.0) }
//! # let schedule = PatchRouter::new(2, 2).unwrap().compile();
//! # let mut ws = Workspace::for_schedule(&schedule, 64);
//! # let (device_in, mut device_out) = (vec![0.0; 128], vec![0.0; 128]);
//! ws.check(&schedule, &device_in, &device_out)?;
//! ws.load_device_input(&schedule, &device_in);
//! for level in schedule.levels() {
//!     for step in level {
//!         ws.assemble_input(&schedule, step);
//!     }
//!     for step in level {
//!         let (input, output) = ws.io_mut(step);
//!         run(step, input, output);
//!     }
//! }
//! ws.mix_device_output(&schedule, &mut device_out);
//! # Ok::<(), ExecuteError>(())
//! ```
//!
//! Nothing here allocates, locks or panics once [`Workspace::check`] has passed for
//! the schedule and buffers at hand; every method takes steps of that schedule.
//! Both executors mix through the same code, so they compute bit-identical sums.

use std::error::Error;
use std::fmt;

use crate::schedule::{Lanes, MixTerm, Schedule, Step};

/// The audio of one cycle: `lanes × frames` samples, preallocated.
///
/// Lane `l` is `data[l * frames..(l + 1) * frames]`; a step's input and output
/// are planar slices of adjacent lanes. Build it off the audio thread, for the
/// schedule it will run ([`Workspace::for_schedule`]) or for the largest one
/// expected ([`Workspace::new`]).
#[derive(Clone, Debug)]
pub struct Workspace {
    frames: usize,
    lanes: usize,
    data: Vec<f32>,
}

/// Why a cycle could not run: the workspace or a device buffer does not fit.
/// Nothing was read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecuteError {
    /// The schedule needs more lanes than the workspace has.
    TooFewLanes {
        /// Lanes the schedule needs.
        needed: u32,
        /// Lanes the workspace has.
        have: u32,
    },
    /// The device input buffer is not `input_channels × frames` long.
    DeviceInputLength {
        /// The length expected.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The device output buffer is not `output_channels × frames` long.
    DeviceOutputLength {
        /// The length expected.
        expected: usize,
        /// The length given.
        got: usize,
    },
}

impl fmt::Display for ExecuteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooFewLanes { needed, have } => write!(
                f,
                "the schedule needs {needed} lanes but the workspace has {have}; build the \
                 workspace with Workspace::for_schedule"
            ),
            Self::DeviceInputLength { expected, got } => write!(
                f,
                "the device input buffer holds {got} samples, the schedule expects {expected} \
                 (input channels × block frames, planar)"
            ),
            Self::DeviceOutputLength { expected, got } => write!(
                f,
                "the device output buffer holds {got} samples, the schedule expects {expected} \
                 (output channels × block frames, planar)"
            ),
        }
    }
}

impl Error for ExecuteError {}

impl Workspace {
    /// A zeroed workspace of `lanes` lanes of `frames` samples.
    pub fn new(lanes: u32, frames: usize) -> Self {
        let lanes = lanes as usize;
        Self {
            frames,
            lanes,
            data: vec![0.0; lanes * frames],
        }
    }

    /// A workspace with exactly the lanes `schedule` needs.
    pub fn for_schedule(schedule: &Schedule, frames: usize) -> Self {
        Self::new(schedule.lanes(), frames)
    }

    /// Samples per lane (the block size).
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The number of lanes.
    pub fn lanes(&self) -> u32 {
        self.lanes as u32
    }

    /// Checks that this workspace and the planar device buffers fit `schedule`.
    /// Once it passes, the other methods cannot fail for steps of `schedule`.
    ///
    /// # Errors
    /// The first mismatch found.
    pub fn check(
        &self,
        schedule: &Schedule,
        device_input: &[f32],
        device_output: &[f32],
    ) -> Result<(), ExecuteError> {
        if schedule.lanes() as usize > self.lanes {
            return Err(ExecuteError::TooFewLanes {
                needed: schedule.lanes(),
                have: self.lanes(),
            });
        }
        let expected = usize::from(schedule.input_channels()) * self.frames;
        if device_input.len() != expected {
            return Err(ExecuteError::DeviceInputLength {
                expected,
                got: device_input.len(),
            });
        }
        let expected = usize::from(schedule.output_channels()) * self.frames;
        if device_output.len() != expected {
            return Err(ExecuteError::DeviceOutputLength {
                expected,
                got: device_output.len(),
            });
        }
        Ok(())
    }

    /// Copies the planar device input into [`Schedule::device_input`] lanes
    /// (nothing when no route reads it).
    pub fn load_device_input(&mut self, schedule: &Schedule, device_input: &[f32]) {
        let lanes = schedule.device_input();
        let span = self.span(lanes);
        let dst = &mut self.data[span];
        dst.copy_from_slice(&device_input[..dst.len()]);
    }

    /// Mixes `step`'s input lanes from the lanes its mix reads.
    pub fn assemble_input(&mut self, schedule: &Schedule, step: &Step) {
        let first = step.input().start() as usize;
        for (c, terms) in schedule.input_mix(step).enumerate() {
            self.mix_lane(first + c, terms);
        }
    }

    /// `step`'s planar input (`inputs × frames`).
    pub fn input(&self, step: &Step) -> &[f32] {
        &self.data[self.span(step.input())]
    }

    /// `step`'s planar output (`outputs × frames`).
    pub fn output(&self, step: &Step) -> &[f32] {
        &self.data[self.span(step.output())]
    }

    /// `step`'s planar output, to be written.
    pub fn output_mut(&mut self, step: &Step) -> &mut [f32] {
        let span = self.span(step.output());
        &mut self.data[span]
    }

    /// `step`'s input and its output to be written, at once (they never overlap).
    pub fn io_mut(&mut self, step: &Step) -> (&[f32], &mut [f32]) {
        let (input, output) = (self.span(step.input()), self.span(step.output()));
        if input.is_empty() || output.is_empty() {
            let output = &mut self.data[output];
            return (&[], output);
        }
        if input.end <= output.start {
            let (low, high) = self.data.split_at_mut(output.start);
            (&low[input], &mut high[..output.len()])
        } else {
            debug_assert!(
                output.end <= input.start,
                "buffer plan overlaps a step's io"
            );
            let (low, high) = self.data.split_at_mut(input.start);
            (&high[..input.len()], &mut low[output])
        }
    }

    /// Mixes the device output (planar `output_channels × frames`) from the lanes
    /// the schedule's output mix reads.
    pub fn mix_device_output(&self, schedule: &Schedule, device_output: &mut [f32]) {
        let frames = self.frames;
        for (dst, terms) in device_output
            .chunks_exact_mut(frames.max(1))
            .zip(schedule.output_mix())
        {
            let mut terms = terms.iter();
            match terms.next() {
                None => dst.fill(0.0),
                Some(first) => {
                    let src = &self.data[self.lane(first.src())];
                    scale(dst, src, first.gain());
                    for t in terms {
                        let src = &self.data[self.lane(t.src())];
                        accumulate(dst, src, t.gain());
                    }
                }
            }
        }
    }

    /// Writes lane `dst` as the sum of `terms` (silence if there are none).
    fn mix_lane(&mut self, dst: usize, terms: &[MixTerm]) {
        let mut terms = terms.iter();
        let Some(first) = terms.next() else {
            let lane = self.lane(dst as u32);
            self.data[lane].fill(0.0);
            return;
        };
        let (d, s) = self.lane_pair(dst, first.src() as usize);
        scale(d, s, first.gain());
        for t in terms {
            let (d, s) = self.lane_pair(dst, t.src() as usize);
            accumulate(d, s, t.gain());
        }
    }

    /// Lane `dst` to write and lane `src` to read; the buffer plan never makes a
    /// mix read the lane it writes.
    fn lane_pair(&mut self, dst: usize, src: usize) -> (&mut [f32], &[f32]) {
        debug_assert_ne!(dst, src, "buffer plan makes a mix read its own lane");
        let f = self.frames;
        if dst < src {
            let (low, high) = self.data.split_at_mut(src * f);
            (&mut low[dst * f..(dst + 1) * f], &high[..f])
        } else {
            let (low, high) = self.data.split_at_mut(dst * f);
            (&mut high[..f], &low[src * f..(src + 1) * f])
        }
    }

    fn lane(&self, lane: u32) -> std::ops::Range<usize> {
        let start = lane as usize * self.frames;
        start..start + self.frames
    }

    fn span(&self, lanes: Lanes) -> std::ops::Range<usize> {
        let r = lanes.range();
        r.start * self.frames..r.end * self.frames
    }
}

/// `dst = gain × src`.
fn scale(dst: &mut [f32], src: &[f32], gain: f32) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = gain * s;
    }
}

/// `dst += gain × src`.
fn accumulate(dst: &mut [f32], src: &[f32], gain: f32) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += gain * s;
    }
}

/// What runs one step in the reference executor: for the reference renderer, the
/// module linked in-process; in tests, a simple function.
///
/// Implemented for every `FnMut(&Step, &[f32], &mut [f32])`.
pub trait StepRunner {
    /// Runs `step`'s slot on its planar `input` (`inputs × frames`), writing its
    /// planar `output` (`outputs × frames`, zeroed beforehand). Called on the
    /// audio thread: must not allocate, lock or block.
    fn run(&mut self, step: &Step, input: &[f32], output: &mut [f32]);
}

impl<F: FnMut(&Step, &[f32], &mut [f32])> StepRunner for F {
    fn run(&mut self, step: &Step, input: &[f32], output: &mut [f32]) {
        self(step, input, output);
    }
}

/// Runs one cycle of `schedule` in-process: the reference executor.
///
/// Reads the planar `device_input` (`input_channels × frames`), runs every step
/// level by level (all inputs of a level are assembled, then its steps run in
/// order), and writes the planar `device_output` (`output_channels × frames`).
/// Allocates nothing, locks nothing.
///
/// # Errors
/// [`ExecuteError`] if the workspace or a buffer does not fit; then nothing ran.
pub fn execute<R: StepRunner + ?Sized>(
    schedule: &Schedule,
    workspace: &mut Workspace,
    runner: &mut R,
    device_input: &[f32],
    device_output: &mut [f32],
) -> Result<(), ExecuteError> {
    workspace.check(schedule, device_input, device_output)?;
    workspace.load_device_input(schedule, device_input);
    for level in schedule.levels() {
        for step in level {
            workspace.assemble_input(schedule, step);
        }
        for step in level {
            let (input, output) = workspace.io_mut(step);
            output.fill(0.0);
            runner.run(step, input, output);
        }
    }
    workspace.mix_device_output(schedule, device_output);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelMap, PatchRouter};

    /// Multiplies every input channel by 2 into the same output channel; outputs
    /// without a matching input get the step index + 1.
    fn doubler(step: &Step, input: &[f32], output: &mut [f32]) {
        let frames = 4;
        for (c, out) in output.chunks_exact_mut(frames).enumerate() {
            match input.chunks_exact(frames).nth(c) {
                Some(inp) => out.iter_mut().zip(inp).for_each(|(o, i)| *o = 2.0 * i),
                None => out.fill(step.index() as f32 + 1.0),
            }
        }
    }

    #[test]
    fn execute_runs_a_chain_and_mixes_the_output() {
        let mut p = PatchRouter::new(2, 2).unwrap();
        p.add_slot("a:0", 2, 2).unwrap();
        p.add_slot("b:0", 2, 2).unwrap();
        p.connect("input", "a:0", ChannelMap::Auto, 1.0).unwrap();
        p.connect("a:0", "b:0", ChannelMap::Pairs(vec![(0, 1), (1, 0)]), 0.5)
            .unwrap();
        p.connect("b:0", "output", ChannelMap::Auto, 1.0).unwrap();
        p.connect("input", "output", ChannelMap::Auto, 0.25)
            .unwrap();
        let s = p.compile();
        let mut ws = Workspace::for_schedule(&s, 4);
        let input = [1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0];
        let mut output = [9.0; 8];
        execute(&s, &mut ws, &mut doubler, &input, &mut output).unwrap();
        // left: a doubles 3 → 6, swapped, halved → 3, b doubles → 6, plus 0.25 × 1
        // right: 1 → 2 → 1 → 2, plus 0.25 × 3.
        assert_eq!(output, [6.25, 6.25, 6.25, 6.25, 2.75, 2.75, 2.75, 2.75]);
    }

    #[test]
    fn execute_refuses_buffers_of_the_wrong_size() {
        let mut p = PatchRouter::new(1, 2).unwrap();
        p.add_slot("a:0", 1, 1).unwrap();
        p.connect("input", "a:0", ChannelMap::Auto, 1.0).unwrap();
        p.connect("a:0", "output", ChannelMap::Auto, 1.0).unwrap();
        let s = p.compile();
        let mut small = Workspace::new(0, 4);
        let mut ws = Workspace::for_schedule(&s, 4);
        let mut out = [7.0; 8];
        let err = execute(&s, &mut small, &mut doubler, &[0.0; 4], &mut out);
        assert!(matches!(err, Err(ExecuteError::TooFewLanes { .. })));
        let err = execute(&s, &mut ws, &mut doubler, &[0.0; 3], &mut out);
        assert_eq!(
            err,
            Err(ExecuteError::DeviceInputLength {
                expected: 4,
                got: 3
            })
        );
        let err = execute(&s, &mut ws, &mut doubler, &[0.0; 4], &mut out[..7]);
        assert!(matches!(err, Err(ExecuteError::DeviceOutputLength { .. })));
        assert_eq!(out, [7.0; 8], "a refused cycle writes nothing");
    }

    #[test]
    fn unrouted_output_is_silent() {
        let mut p = PatchRouter::new(0, 2).unwrap();
        p.add_slot("osc:0", 0, 1).unwrap();
        let s = p.compile();
        let mut ws = Workspace::for_schedule(&s, 4);
        let mut out = [7.0; 8];
        let mut ran = 0;
        let mut runner = |_: &Step, _: &[f32], o: &mut [f32]| {
            ran += 1;
            o.fill(1.0);
        };
        execute(&s, &mut ws, &mut runner, &[], &mut out).unwrap();
        assert_eq!(ran, 1, "an unrouted slot still runs");
        assert_eq!(out, [0.0; 8]);
    }
}
