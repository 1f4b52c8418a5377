//! Audio rings: planar f32 blocks tagged with their cycle number.
//!
//! Slot: `cycle u64, frames u32, channels u32`, then `channels × block_frames` f32,
//! planar. One copy in ([`AudioProducer::push`]) and one copy out
//! ([`AudioConsumer::pop`]); wait-free; no allocation.

use thiserror::Error;

use crate::layout::{AUDIO_SLOT_HEADER, AUDIO_SLOT_TAG};
use crate::ring::{ConsumerCore, ProducerCore, RingFault};

/// Why a push did not happen. `Copy`; the caller still holds the rejected data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum PushError {
    /// The ring is full: the consumer has not caught up.
    #[error("the ring is full: the consumer has not caught up")]
    Full,
    /// The block does not have the layout's number of samples.
    #[error(
        "block of {found} samples, the layout needs {expected} (channels × block_frames, planar)"
    )]
    WrongLength {
        /// Samples the layout needs.
        expected: usize,
        /// Samples given.
        found: usize,
    },
    /// The ring is faulted (see [`RingFault`]).
    #[error(transparent)]
    Fault(#[from] RingFault),
}

/// Producing end of an audio ring (host: audio in; worker: audio out).
#[derive(Debug)]
pub struct AudioProducer {
    core: ProducerCore,
    channels: u32,
    frames: u32,
    samples: usize,
}

impl AudioProducer {
    pub(crate) fn new(core: ProducerCore, channels: u32, frames: u32) -> Self {
        let samples = channels as usize * frames as usize;
        debug_assert!(AUDIO_SLOT_HEADER + samples * 4 <= core.g.stride);
        Self {
            core,
            channels,
            frames,
            samples,
        }
    }

    /// Samples per block (`channels × block_frames`).
    pub fn block_samples(&self) -> usize {
        self.samples
    }

    /// Copies one planar block (channel c's frames at `c × block_frames`) into the ring,
    /// tagged with `cycle`. RT-safe, wait-free.
    #[inline]
    pub fn push(&mut self, cycle: u64, planar: &[f32]) -> Result<(), PushError> {
        if planar.len() != self.samples {
            return Err(PushError::WrongLength {
                expected: self.samples,
                found: planar.len(),
            });
        }
        let Some(off) = self.core.reserve()? else {
            return Err(PushError::Full);
        };
        debug_assert!(off + AUDIO_SLOT_HEADER + self.samples * 4 <= self.core.g.end());
        let mut tag = [0u8; AUDIO_SLOT_TAG];
        tag[0..8].copy_from_slice(&cycle.to_le_bytes());
        tag[8..12].copy_from_slice(&self.frames.to_le_bytes());
        tag[12..16].copy_from_slice(&self.channels.to_le_bytes());
        let map = &self.core.map;
        // SAFETY: `off` is a slot of the private geometry: tag and samples fit in the
        // stride (checked at construction) inside the ring. The slot is ours until
        // `commit`: the consumer's validated tail shows it has finished reading it.
        unsafe { map.write_bytes(off, tag.as_ptr(), AUDIO_SLOT_TAG) };
        // SAFETY: as above; `planar` is caller memory holding exactly `samples` f32.
        unsafe {
            map.write_bytes(
                off + AUDIO_SLOT_HEADER,
                planar.as_ptr().cast::<u8>(),
                self.samples * 4,
            )
        };
        self.core.commit();
        Ok(())
    }

    /// Free slots, after a fresh look at the consumer. RT-safe.
    pub fn free_slots(&mut self) -> Result<u32, RingFault> {
        self.core.free()
    }

    /// Blocks pushed since the region was created (this side's private counter).
    pub fn position(&self) -> u64 {
        self.core.head()
    }

    /// The fault this ring is stuck in, if any.
    pub fn fault(&self) -> Option<RingFault> {
        self.core.fault()
    }

    pub(crate) fn core_mut(&mut self) -> &mut ProducerCore {
        &mut self.core
    }
}

/// Consuming end of an audio ring (host: audio out; worker: audio in).
#[derive(Debug)]
pub struct AudioConsumer {
    core: ConsumerCore,
    channels: u32,
    frames: u32,
    samples: usize,
}

impl AudioConsumer {
    pub(crate) fn new(core: ConsumerCore, channels: u32, frames: u32) -> Self {
        let samples = channels as usize * frames as usize;
        debug_assert!(AUDIO_SLOT_HEADER + samples * 4 <= core.g.stride);
        Self {
            core,
            channels,
            frames,
            samples,
        }
    }

    /// Samples per block (`channels × block_frames`).
    pub fn block_samples(&self) -> usize {
        self.samples
    }

    /// The front block's slot offset and cycle tag, after one copy of its tag and a
    /// check of its frames/channels against the private layout.
    #[inline]
    fn front_checked(&mut self) -> Result<Option<(usize, u64)>, RingFault> {
        let Some(off) = self.core.front()? else {
            return Ok(None);
        };
        let mut tag = [0u8; AUDIO_SLOT_TAG];
        debug_assert!(off + AUDIO_SLOT_TAG <= self.core.g.end());
        // SAFETY: `off` is a published slot of the private geometry; the 16-byte tag lies
        // inside it; `tag` is a local buffer.
        unsafe {
            self.core
                .map
                .read_bytes(off, tag.as_mut_ptr(), AUDIO_SLOT_TAG)
        };
        let [
            c0,
            c1,
            c2,
            c3,
            c4,
            c5,
            c6,
            c7,
            f0,
            f1,
            f2,
            f3,
            h0,
            h1,
            h2,
            h3,
        ] = tag;
        let cycle = u64::from_le_bytes([c0, c1, c2, c3, c4, c5, c6, c7]);
        let frames = u32::from_le_bytes([f0, f1, f2, f3]);
        let channels = u32::from_le_bytes([h0, h1, h2, h3]);
        if frames != self.frames || channels != self.channels {
            let ring = self.core.g.id;
            return Err(self.core.set_fault(RingFault::BadBlock { ring }));
        }
        Ok(Some((off, cycle)))
    }

    /// The cycle tag of the oldest block, without consuming it. RT-safe.
    pub fn peek_cycle(&mut self) -> Result<Option<u64>, RingFault> {
        Ok(self.front_checked()?.map(|(_, cycle)| cycle))
    }

    /// Copies the oldest block into `planar_out` and consumes it; returns its cycle tag.
    /// RT-safe, wait-free.
    ///
    /// `planar_out` should hold [`AudioConsumer::block_samples`] samples; a shorter one
    /// gets the first samples, a longer one is zero-filled past the block (a caller bug,
    /// caught by a `debug_assert!`).
    #[inline]
    pub fn pop(&mut self, planar_out: &mut [f32]) -> Result<Option<u64>, RingFault> {
        debug_assert_eq!(planar_out.len(), self.samples, "pop buffer length");
        let Some((off, cycle)) = self.front_checked()? else {
            return Ok(None);
        };
        let n = planar_out.len().min(self.samples);
        debug_assert!(off + AUDIO_SLOT_HEADER + n * 4 <= self.core.g.end());
        // SAFETY: `off` is a published slot of the private geometry: tag plus `samples`
        // f32 lie inside the stride. `planar_out` is caller memory with room for `n`
        // f32; any bit pattern is a valid f32, so whatever the peer wrote is sound data.
        unsafe {
            self.core.map.read_bytes(
                off + AUDIO_SLOT_HEADER,
                planar_out.as_mut_ptr().cast::<u8>(),
                n * 4,
            )
        };
        planar_out[n..].fill(0.0);
        self.core.release();
        Ok(Some(cycle))
    }

    /// Consumes the oldest block without copying it. `Ok(false)` if empty. RT-safe.
    pub fn skip(&mut self) -> Result<bool, RingFault> {
        match self.core.front()? {
            Some(_) => {
                self.core.release();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Blocks ready to pop, after a fresh look at the producer. RT-safe.
    pub fn available(&mut self) -> Result<u32, RingFault> {
        self.core.available()
    }

    /// Blocks consumed since the region was created (this side's private counter).
    pub fn position(&self) -> u64 {
        self.core.tail()
    }

    /// The fault this ring is stuck in, if any.
    pub fn fault(&self) -> Option<RingFault> {
        self.core.fault()
    }

    pub(crate) fn core_mut(&mut self) -> &mut ConsumerCore {
        &mut self.core
    }
}
