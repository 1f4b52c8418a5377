//! [`Instance`]: a prepared processor plus the one wrapper every real-time call goes
//! through. The worker's run loop and the host's in-process reference renderer both drive
//! processors through this type, so both compute the same bits.

use crate::denormal::with_denormals_flushed;
use crate::processor::{AudioIn, AudioOut, ParamError, ProcessConfig, ProcessContext, Processor};

/// Runs `f` the way every real-time call is run: with denormals flushed (FTZ/DAZ) and, in
/// debug builds of a program whose global allocator is `assert_no_alloc::AllocDisabler`,
/// with allocation forbidden (an allocation aborts the process).
#[inline]
pub fn rt_guard<R>(f: impl FnOnce() -> R) -> R {
    with_denormals_flushed(|| assert_no_alloc::assert_no_alloc(f))
}

/// A processor prepared for one [`ProcessConfig`].
///
/// Besides calling the processor, an instance owns three things every host needs the same
/// way: parameter validation ([`crate::ParamSpec::sanitize`]), the block counter handed to
/// the processor as [`ProcessContext::block_index`], and bypass (output = input, entered
/// and left with a one-block linear crossfade; the processor keeps running underneath so
/// its state stays continuous).
#[derive(Debug)]
pub struct Instance<P: Processor> {
    processor: P,
    config: ProcessConfig,
    blocks: u64,
    /// Bypass as requested for the next block.
    bypass: bool,
    /// Bypass as the last block was output; the next block crossfades when they differ.
    last_bypass: bool,
}

impl<P: Processor> Instance<P> {
    /// Prepares `processor` for `config` (this may allocate).
    ///
    /// # Panics
    /// If `config` has zero frames or channels.
    pub fn new(mut processor: P, config: ProcessConfig) -> Self {
        assert!(
            config.block_frames > 0 && config.channels_in > 0 && config.channels_out > 0,
            "a block has at least one frame and one channel each way: {config:?}"
        );
        processor.prepare(&config);
        Self {
            processor,
            config,
            blocks: 0,
            bypass: false,
            last_bypass: false,
        }
    }

    /// The configuration the processor was prepared for.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// The processor.
    pub fn processor(&self) -> &P {
        &self.processor
    }

    /// The processor, mutable (for state save/restore off the real-time path).
    pub fn processor_mut(&mut self) -> &mut P {
        &mut self.processor
    }

    /// Blocks processed since [`Instance::new`].
    pub fn blocks_processed(&self) -> u64 {
        self.blocks
    }

    /// Processes one planar block tagged `cycle`. Real-time safe.
    ///
    /// # Panics
    /// If `input`/`output` are not `config.input_samples()`/`output_samples()` long.
    pub fn process(&mut self, cycle: u64, input: &[f32], output: &mut [f32]) {
        assert_eq!(
            input.len(),
            self.config.input_samples(),
            "input block length"
        );
        assert_eq!(
            output.len(),
            self.config.output_samples(),
            "output block length"
        );
        let ctx = ProcessContext {
            cycle,
            block_index: self.blocks,
            sample_rate: self.config.sample_rate,
        };
        let frames = self.config.block_frames;
        let (bypass, crossfade) = (self.bypass, self.bypass != self.last_bypass);
        let processor = &mut self.processor;
        rt_guard(|| {
            let input = AudioIn::new(input, frames);
            let mut out = AudioOut::new(output, frames);
            processor.process(&input, &mut out, &ctx);
            if crossfade {
                for (c, wet) in out.channels_mut().enumerate() {
                    let dry = input.channel_for_output(c);
                    for (i, (y, &x)) in wet.iter_mut().zip(dry).enumerate() {
                        let t = (i + 1) as f32 / frames as f32;
                        let dry_share = if bypass { t } else { 1.0 - t };
                        *y = *y + (x - *y) * dry_share;
                    }
                }
            } else if bypass {
                out.copy_from(&input);
            }
        });
        self.last_bypass = bypass;
        self.blocks += 1;
    }

    /// Validates and applies a parameter change (applied before the next block). Returns
    /// the value the processor received (clamped/rounded). Real-time safe.
    pub fn set_param(&mut self, id: u32, value: f32) -> Result<f32, ParamError> {
        let spec = self
            .processor
            .params()
            .get(id as usize)
            .ok_or(ParamError::UnknownId(id))?;
        let value = spec.sanitize(value)?;
        let processor = &mut self.processor;
        rt_guard(|| processor.set_param(id, value));
        Ok(value)
    }

    /// Clears the processor's running state. Real-time safe.
    pub fn reset(&mut self) {
        let processor = &mut self.processor;
        rt_guard(|| processor.reset());
    }

    /// Enters or leaves bypass, crossfading over the next block.
    pub fn set_bypass(&mut self, on: bool) {
        self.bypass = on;
    }

    /// Whether bypass is on.
    pub fn bypassed(&self) -> bool {
        self.bypass
    }
}
