//! The binary layout of a slot region (docs/ABI.md): sizes, offsets, strides.
//!
//! Everything here is pure arithmetic on a validated [`SlotLayout`]; the offsets a side
//! uses are computed once from its private copy of the layout and never re-read from
//! the region.

use thiserror::Error;

/// The ABI version written into every region header; a worker refuses any other.
pub const ABI_VERSION: u32 = 2;

/// `"SLOTPOOL"` as the little-endian u64 the header's first word holds.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SLOTPOOL");

/// Alignment of every section and of the producer/consumer counter lines: two cache
/// lines, so adjacent-line prefetch never couples a host word and a worker word.
pub const SECTION_ALIGN: usize = 128;

/// The largest region slotpool will create or open (1 GiB). A layout needing more is
/// refused; a worker refuses a larger fd before mapping it.
pub const MAX_REGION_LEN: usize = 1 << 30;

/// Largest channel count per direction.
pub const MAX_CHANNELS: u32 = 64;
/// Largest block length in frames.
pub const MAX_BLOCK_FRAMES: u32 = 8192;
/// Smallest ring capacity.
pub const MIN_CAPACITY: u32 = 2;
/// Largest ring capacity.
pub const MAX_CAPACITY: u32 = 4096;
/// Longest slot name in bytes (UTF-8, stored NUL-padded).
pub const MAX_SLOT_NAME: usize = 64;

/// Size of one command or event record.
pub const RECORD_SIZE: usize = 64;
/// Bytes of an audio slot's tag: `cycle u64, frames u32, channels u32`.
pub const AUDIO_SLOT_TAG: usize = 16;
/// Bytes in front of the samples of an audio slot: the tag, then reserved bytes up to
/// one cache line, so every block's samples start on a 64-byte boundary (ABI 2; ABI 1
/// had the samples right after the tag, 16 bytes into a line).
pub const AUDIO_SLOT_HEADER: usize = 64;
const _: () = assert!(AUDIO_SLOT_TAG <= AUDIO_SLOT_HEADER && AUDIO_SLOT_HEADER.is_multiple_of(64));
/// The skew added to every audio slot stride (see [`SlotLayout::audio_stride`]).
pub const AUDIO_STRIDE_SKEW: usize = 64;

// ---- header offsets (docs/ABI.md) ----
pub(crate) mod hdr {
    // ident: host-written once before `magic` is published.
    pub(crate) const MAGIC: usize = 0;
    pub(crate) const ABI_VERSION: usize = 8;
    pub(crate) const HEADER_LEN: usize = 12;
    pub(crate) const REGION_LEN: usize = 16;
    pub(crate) const SLOT_NAME: usize = 24;
    pub(crate) const CHANNELS_IN: usize = 88;
    pub(crate) const CHANNELS_OUT: usize = 92;
    pub(crate) const BLOCK_FRAMES: usize = 96;
    pub(crate) const AUDIO_CAPACITY: usize = 100;
    pub(crate) const COMMAND_CAPACITY: usize = 104;
    pub(crate) const EVENT_CAPACITY: usize = 108;
    pub(crate) const OFF_AUDIO_IN: usize = 112;
    pub(crate) const OFF_AUDIO_OUT: usize = 120;
    pub(crate) const OFF_COMMANDS: usize = 128;
    pub(crate) const OFF_EVENTS: usize = 136;
    pub(crate) const IDENT_END: usize = 144;

    // host-written words: their own 128-byte line.
    pub(crate) const HOST: usize = 256;
    pub(crate) const HOST_HEARTBEAT: usize = HOST; // u64
    pub(crate) const DOORBELL: usize = HOST + 8; // u32 futex
    pub(crate) const HOST_WAITING: usize = HOST + 12; // u32
    pub(crate) const CYCLE: usize = HOST + 16; // u64
    pub(crate) const HOST_FLAGS: usize = HOST + 24; // u32
    pub(crate) const RING_NS: usize = HOST + 32; // u64, CLOCK_MONOTONIC ns of the last ring

    // worker-written words: the next 128-byte line.
    pub(crate) const WORKER: usize = 384;
    pub(crate) const WORKER_HEARTBEAT: usize = WORKER; // u64
    pub(crate) const DONE: usize = WORKER + 8; // u32 futex
    pub(crate) const WORKER_WAITING: usize = WORKER + 12; // u32
    pub(crate) const STATE: usize = WORKER + 16; // u32
    pub(crate) const PID: usize = WORKER + 20; // u32
    pub(crate) const FAULT_CODE: usize = WORKER + 24; // u32
    pub(crate) const PROCESS_NS: usize = WORKER + 32; // u64

    /// Length of the header; the first ring starts here.
    pub(crate) const LEN: usize = 512;

    const _: () = assert!(IDENT_END <= HOST && HOST + 128 <= WORKER && WORKER + 128 <= LEN);

    /// Every atomic u64 word of the header (offsets).
    pub(crate) const WORDS64: [usize; 6] = [
        MAGIC,
        HOST_HEARTBEAT,
        CYCLE,
        RING_NS,
        WORKER_HEARTBEAT,
        PROCESS_NS,
    ];
    /// Every atomic u32 word of the header (offsets).
    pub(crate) const WORDS32: [usize; 8] = [
        DOORBELL,
        HOST_WAITING,
        HOST_FLAGS,
        DONE,
        WORKER_WAITING,
        STATE,
        PID,
        FAULT_CODE,
    ];
}

/// Offsets inside a ring's control block.
pub(crate) const RING_HEAD: usize = 0;
pub(crate) const RING_TAIL: usize = SECTION_ALIGN;
pub(crate) const RING_SLOTS: usize = 2 * SECTION_ALIGN;

/// The shape of one slot region: channels, block length and ring capacities.
///
/// The host picks it, writes it into the header, and both sides compute every offset
/// from their own validated copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotLayout {
    /// Channels of the audio going into the worker (1..=64).
    pub channels_in: u32,
    /// Channels of the audio coming back from the worker (1..=64).
    pub channels_out: u32,
    /// Frames per block (1..=8192).
    pub block_frames: u32,
    /// Blocks per audio ring, a power of two in 2..=4096.
    pub audio_capacity: u32,
    /// Records in the command ring, a power of two in 2..=4096.
    pub command_capacity: u32,
    /// Records in the event ring, a power of two in 2..=4096.
    pub event_capacity: u32,
}

/// What is wrong with a [`SlotLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// A channel count is outside 1..=64.
    #[error("{field} = {value} is out of range: use 1..={MAX_CHANNELS} channels")]
    Channels {
        /// `channels_in` or `channels_out`.
        field: &'static str,
        /// The rejected value.
        value: u32,
    },
    /// The block length is outside 1..=8192 frames.
    #[error("block_frames = {0} is out of range: use 1..={MAX_BLOCK_FRAMES} frames")]
    BlockFrames(u32),
    /// A ring capacity is not a power of two in 2..=4096.
    #[error(
        "{field} = {value} is not a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}: pick one of 2, 4, 8, ..., 4096"
    )]
    Capacity {
        /// `audio_capacity`, `command_capacity` or `event_capacity`.
        field: &'static str,
        /// The rejected value.
        value: u32,
    },
    /// The whole region would exceed [`MAX_REGION_LEN`].
    #[error(
        "the region would need {len} bytes, more than the {MAX_REGION_LEN}-byte limit: lower audio_capacity, block_frames or the channel counts"
    )]
    TooLarge {
        /// Bytes the layout would need.
        len: u64,
    },
}

/// Where each ring lives, derived from a validated layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Offsets {
    pub(crate) audio_in: usize,
    pub(crate) audio_out: usize,
    pub(crate) commands: usize,
    pub(crate) events: usize,
    pub(crate) region_len: usize,
}

const fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

impl SlotLayout {
    /// Checks every bound: channels 1..=64, frames 1..=8192, capacities powers of two in
    /// 2..=4096, and the total size at most [`MAX_REGION_LEN`].
    pub fn validate(&self) -> Result<(), LayoutError> {
        for (field, value) in [
            ("channels_in", self.channels_in),
            ("channels_out", self.channels_out),
        ] {
            if !(1..=MAX_CHANNELS).contains(&value) {
                return Err(LayoutError::Channels { field, value });
            }
        }
        if !(1..=MAX_BLOCK_FRAMES).contains(&self.block_frames) {
            return Err(LayoutError::BlockFrames(self.block_frames));
        }
        for (field, value) in [
            ("audio_capacity", self.audio_capacity),
            ("command_capacity", self.command_capacity),
            ("event_capacity", self.event_capacity),
        ] {
            if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&value) || !value.is_power_of_two() {
                return Err(LayoutError::Capacity { field, value });
            }
        }
        let len = self.offsets_u64().4;
        if len > MAX_REGION_LEN as u64 {
            return Err(LayoutError::TooLarge { len });
        }
        Ok(())
    }

    /// Samples in one input block: `channels_in * block_frames` (planar).
    pub fn input_samples(&self) -> usize {
        self.channels_in as usize * self.block_frames as usize
    }

    /// Samples in one output block: `channels_out * block_frames` (planar).
    pub fn output_samples(&self) -> usize {
        self.channels_out as usize * self.block_frames as usize
    }

    /// Byte distance between consecutive slots of an audio ring carrying `channels`.
    ///
    /// The slot (64-byte header + samples) is rounded up to a multiple of 128 bytes and then
    /// 64 bytes are added, so consecutive blocks never start at the same 4 KiB page
    /// offset: glibc's memcpy on some CPUs (AMD Zen) slows down by an order of magnitude
    /// when source and destination alias modulo 4 KiB for 4–8 KiB copies.
    pub fn audio_stride(&self, channels: u32) -> usize {
        Self::stride_u64(channels, self.block_frames) as usize
    }

    fn stride_u64(channels: u32, frames: u32) -> u64 {
        let bytes = AUDIO_SLOT_HEADER as u64 + channels as u64 * frames as u64 * 4;
        align_up(bytes, SECTION_ALIGN as u64) + AUDIO_STRIDE_SKEW as u64
    }

    /// Total bytes of the region for this layout (a multiple of 4096).
    /// Meaningful only for a layout that passes [`SlotLayout::validate`].
    pub fn region_len(&self) -> usize {
        self.offsets_u64().4 as usize
    }

    /// (audio_in, audio_out, commands, events, region_len), in u64 so that even an
    /// unvalidated layout cannot overflow (all inputs are u32).
    fn offsets_u64(&self) -> (u64, u64, u64, u64, u64) {
        let a = SECTION_ALIGN as u64;
        let ring = |cap: u32, stride: u64| RING_SLOTS as u64 + cap as u64 * stride;
        let audio_in = hdr::LEN as u64;
        let audio_out = align_up(
            audio_in
                + ring(
                    self.audio_capacity,
                    Self::stride_u64(self.channels_in, self.block_frames),
                ),
            a,
        );
        let commands = align_up(
            audio_out
                + ring(
                    self.audio_capacity,
                    Self::stride_u64(self.channels_out, self.block_frames),
                ),
            a,
        );
        let events = align_up(
            commands + ring(self.command_capacity, RECORD_SIZE as u64),
            a,
        );
        let end = events + ring(self.event_capacity, RECORD_SIZE as u64);
        (audio_in, audio_out, commands, events, align_up(end, 4096))
    }

    /// Offsets of every ring. Call only on a validated layout (then all fit in usize).
    pub(crate) fn offsets(&self) -> Offsets {
        let (audio_in, audio_out, commands, events, region_len) = self.offsets_u64();
        Offsets {
            audio_in: audio_in as usize,
            audio_out: audio_out as usize,
            commands: commands as usize,
            events: events as usize,
            region_len: region_len as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stereo() -> SlotLayout {
        SlotLayout {
            channels_in: 2,
            channels_out: 2,
            block_frames: 256,
            audio_capacity: 4,
            command_capacity: 64,
            event_capacity: 64,
        }
    }

    #[test]
    fn validate_accepts_bounds_and_rejects_outside() {
        assert_eq!(stereo().validate(), Ok(()));
        let mut l = stereo();
        l.channels_in = 0;
        assert!(matches!(
            l.validate(),
            Err(LayoutError::Channels {
                field: "channels_in",
                ..
            })
        ));
        l = stereo();
        l.channels_out = 65;
        assert!(matches!(
            l.validate(),
            Err(LayoutError::Channels {
                field: "channels_out",
                ..
            })
        ));
        l = stereo();
        l.block_frames = 8193;
        assert_eq!(l.validate(), Err(LayoutError::BlockFrames(8193)));
        for bad in [0, 1, 3, 6, 8192] {
            l = stereo();
            l.event_capacity = bad;
            assert!(
                matches!(
                    l.validate(),
                    Err(LayoutError::Capacity {
                        field: "event_capacity",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        l = SlotLayout {
            channels_in: 64,
            channels_out: 64,
            block_frames: 8192,
            audio_capacity: 4096,
            command_capacity: 4096,
            event_capacity: 4096,
        };
        assert!(matches!(l.validate(), Err(LayoutError::TooLarge { .. })));
    }

    #[test]
    fn sections_are_aligned_and_disjoint() {
        let l = stereo();
        let o = l.offsets();
        for off in [o.audio_in, o.audio_out, o.commands, o.events] {
            assert_eq!(off % SECTION_ALIGN, 0);
        }
        assert!(o.audio_in >= hdr::LEN);
        assert!(o.audio_in + RING_SLOTS + 4 * l.audio_stride(2) <= o.audio_out);
        assert!(o.audio_out + RING_SLOTS + 4 * l.audio_stride(2) <= o.commands);
        assert!(o.commands + RING_SLOTS + 64 * RECORD_SIZE <= o.events);
        assert!(o.events + RING_SLOTS + 64 * RECORD_SIZE <= o.region_len);
        assert_eq!(o.region_len % 4096, 0);
        assert_eq!(o.region_len, l.region_len());
    }

    #[test]
    fn audio_samples_start_on_a_cache_line() {
        let l = stereo();
        let o = l.offsets();
        for (ring, ch) in [(o.audio_in, 2), (o.audio_out, 2)] {
            for k in 0..4 {
                let samples = ring + RING_SLOTS + k * l.audio_stride(ch) + AUDIO_SLOT_HEADER;
                assert_eq!(samples % 64, 0, "slot {k}");
            }
        }
    }

    #[test]
    fn audio_stride_keeps_the_4k_skew() {
        let l = stereo();
        for ch in 1..=8 {
            let s = l.audio_stride(ch);
            assert_eq!(s % SECTION_ALIGN, AUDIO_STRIDE_SKEW);
            assert!(s >= AUDIO_SLOT_HEADER + ch as usize * 256 * 4);
            // every slot, and so every block's samples, starts on a 64-byte boundary
            assert_eq!(s % 64, 0);
            // consecutive blocks never share a 4 KiB page offset
            assert_ne!(s % 4096, 0);
        }
    }
}
