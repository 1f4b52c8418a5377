//! Raw peer-write access for hostile-peer tests (cargo feature `testing`).
//!
//! A [`PeerAccess`] plays the other process: it can store any value into any atomic
//! word of the region and any bytes anywhere in it. Word stores are atomic, so they
//! may run on another thread while the ends operate (like a peer process would).
//! Byte scribbles are plain writes: run them interleaved with the ends' operations on
//! one thread (a concurrent plain write would be a data race inside this process; a
//! real peer process is outside this process's memory model, and the cross-process
//! tests cover that case).

use std::sync::Arc;

use crate::layout::{RECORD_SIZE, SlotLayout, hdr};
use crate::mapping::Mapping;
use crate::ring::RingId;
use crate::sync::Ordering;

/// One atomic word of the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerWord {
    /// Byte offset.
    pub offset: usize,
    /// 4 or 8.
    pub width: usize,
    /// Name, for failure messages.
    pub name: &'static str,
}

/// Raw write access to a region, as a hostile peer has it.
#[derive(Debug, Clone)]
pub struct PeerAccess {
    map: Arc<Mapping>,
    layout: SlotLayout,
}

impl PeerAccess {
    pub(crate) fn new(map: Arc<Mapping>, layout: SlotLayout) -> Self {
        Self { map, layout }
    }

    /// Region length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true (a region always has a header).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Offset of a ring's control block.
    pub fn ring_offset(&self, ring: RingId) -> usize {
        let o = self.layout.offsets();
        match ring {
            RingId::AudioIn => o.audio_in,
            RingId::AudioOut => o.audio_out,
            RingId::Commands => o.commands,
            RingId::Events => o.events,
        }
    }

    /// Byte range of every ring's slots (where block and record bytes live).
    pub fn slot_ranges(&self) -> [(RingId, std::ops::Range<usize>); 4] {
        let l = &self.layout;
        let r = |id, cap: u32, stride: usize| {
            let start = self.ring_offset(id) + crate::layout::RING_SLOTS;
            (id, start..start + cap as usize * stride)
        };
        [
            r(
                RingId::AudioIn,
                l.audio_capacity,
                l.audio_stride(l.channels_in),
            ),
            r(
                RingId::AudioOut,
                l.audio_capacity,
                l.audio_stride(l.channels_out),
            ),
            r(RingId::Commands, l.command_capacity, RECORD_SIZE),
            r(RingId::Events, l.event_capacity, RECORD_SIZE),
        ]
    }

    /// Every atomic word of the region: header words and ring counters.
    pub fn words(&self) -> Vec<PeerWord> {
        let mut v = vec![
            PeerWord {
                offset: hdr::MAGIC,
                width: 8,
                name: "magic",
            },
            PeerWord {
                offset: hdr::HOST_HEARTBEAT,
                width: 8,
                name: "host_heartbeat",
            },
            PeerWord {
                offset: hdr::DOORBELL,
                width: 4,
                name: "doorbell",
            },
            PeerWord {
                offset: hdr::HOST_WAITING,
                width: 4,
                name: "host_waiting",
            },
            PeerWord {
                offset: hdr::CYCLE,
                width: 8,
                name: "cycle",
            },
            PeerWord {
                offset: hdr::HOST_FLAGS,
                width: 4,
                name: "host_flags",
            },
            PeerWord {
                offset: hdr::RING_NS,
                width: 8,
                name: "ring_ns",
            },
            PeerWord {
                offset: hdr::WORKER_HEARTBEAT,
                width: 8,
                name: "worker_heartbeat",
            },
            PeerWord {
                offset: hdr::DONE,
                width: 4,
                name: "done",
            },
            PeerWord {
                offset: hdr::WORKER_WAITING,
                width: 4,
                name: "worker_waiting",
            },
            PeerWord {
                offset: hdr::STATE,
                width: 4,
                name: "state",
            },
            PeerWord {
                offset: hdr::PID,
                width: 4,
                name: "pid",
            },
            PeerWord {
                offset: hdr::FAULT_CODE,
                width: 4,
                name: "fault_code",
            },
            PeerWord {
                offset: hdr::PROCESS_NS,
                width: 8,
                name: "process_ns",
            },
        ];
        for (ring, head, tail) in [
            (RingId::AudioIn, "audio_in.head", "audio_in.tail"),
            (RingId::AudioOut, "audio_out.head", "audio_out.tail"),
            (RingId::Commands, "commands.head", "commands.tail"),
            (RingId::Events, "events.head", "events.tail"),
        ] {
            let base = self.ring_offset(ring);
            v.push(PeerWord {
                offset: base + crate::layout::RING_HEAD,
                width: 8,
                name: head,
            });
            v.push(PeerWord {
                offset: base + crate::layout::RING_TAIL,
                width: 8,
                name: tail,
            });
        }
        v
    }

    /// Atomically stores `value` (truncated to the word's width) into `word`.
    /// Safe to call from another thread while the ends operate.
    pub fn write_word(&self, word: PeerWord, value: u64) {
        let ok = self.words().contains(&word);
        assert!(ok, "not a word of this region: {word:?}");
        // Relaxed: a hostile peer promises no ordering.
        match word.width {
            8 => self.map.word64(word.offset).store(value, Ordering::Relaxed),
            _ => self
                .map
                .word32(word.offset)
                .store(value as u32, Ordering::Relaxed),
        }
    }

    /// Writes `bytes` at `offset` (clipped to the region). Plain writes: call it between
    /// operations of the ends, on the same thread (see the module docs).
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        let start = offset.min(self.map.len());
        let n = bytes.len().min(self.map.len() - start);
        self.map.put(start, &bytes[..n]);
    }
}
