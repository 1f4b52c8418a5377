//! The SPSC ring algorithm shared by the audio and record rings, hardened against a
//! peer that writes anything into the region at any moment.
//!
//! Counters are free-running u64 (`slot = counter & mask`). Each side owns one counter
//! and keeps it privately (the region copy is only ever stored, never read back); the
//! peer's counter is loaded once per refresh, validated against the private state and
//! cached. Validation (pure functions below, unit- and property-tested):
//!
//! * producer, loading the consumer's `tail`: `cached_tail <= tail <= head`
//!   (not behind what it already claimed, not past what was produced);
//! * consumer, loading the producer's `head`: `cached_head <= head <= tail + capacity`
//!   (not behind, not more than one ring's worth ahead of what was consumed).
//!
//! All comparisons are wrapping distances, so no value, including ones near `u64::MAX`,
//! overflows. A violation is a sticky [`RingFault`]: the handle refuses further work
//! until the owner resets it ([`crate::HostEnd::reset`]), so a faulted ring never hands
//! out data again. Slot offsets are computed from the private mask and stride only.

use std::sync::Arc;

use thiserror::Error;

use crate::layout::{RING_HEAD, RING_SLOTS, RING_TAIL};
use crate::mapping::Mapping;
use crate::sync::Ordering;

/// Which ring of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingId {
    /// Audio host → worker.
    AudioIn,
    /// Audio worker → host.
    AudioOut,
    /// Command records host → worker.
    Commands,
    /// Event records worker → host.
    Events,
}

impl std::fmt::Display for RingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RingId::AudioIn => "audio-in ring",
            RingId::AudioOut => "audio-out ring",
            RingId::Commands => "command ring",
            RingId::Events => "event ring",
        })
    }
}

/// The peer broke the ring protocol: its counter or block header is impossible.
///
/// Small and `Copy`, returned on the real-time path. Sticky: once a handle returned a
/// fault it returns the same fault until the region is reset. The host quarantines the
/// slot (kill the worker, [`crate::HostEnd::reset`], start a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum RingFault {
    /// The peer's counter moved backwards past a value it already published.
    #[error(
        "{ring}: the peer's counter went backwards (region corrupted by the peer); quarantine the slot and reset it"
    )]
    CounterWentBack {
        /// The ring.
        ring: RingId,
    },
    /// The peer's counter claims more than was produced or than the ring can hold.
    #[error(
        "{ring}: the peer's counter ran ahead of what is possible (region corrupted by the peer); quarantine the slot and reset it"
    )]
    CounterAhead {
        /// The ring.
        ring: RingId,
    },
    /// An audio block's frames/channels tag does not match the layout.
    #[error(
        "{ring}: a block's frames/channels tag does not match the layout (region corrupted by the peer); quarantine the slot and reset it"
    )]
    BadBlock {
        /// The ring.
        ring: RingId,
    },
}

/// Why a counter failed validation (the ring is filled in by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CounterError {
    WentBack,
    Ahead,
}

impl CounterError {
    fn fault(self, ring: RingId) -> RingFault {
        match self {
            CounterError::WentBack => RingFault::CounterWentBack { ring },
            CounterError::Ahead => RingFault::CounterAhead { ring },
        }
    }
}

/// `lo <= x <= hi` in wrapping distance from `lo` (`hi - lo` is known to be small).
/// Outside: `WentBack` if `x` is "before" `lo` (negative as i64), else `Ahead`.
#[inline]
pub(crate) fn check_between(x: u64, lo: u64, hi: u64) -> Result<u64, CounterError> {
    let progress = x.wrapping_sub(lo);
    let room = hi.wrapping_sub(lo);
    if progress <= room {
        Ok(x)
    } else if (progress as i64) < 0 {
        Err(CounterError::WentBack)
    } else {
        Err(CounterError::Ahead)
    }
}

/// Producer-side validation of a freshly loaded consumer `tail`.
#[inline]
pub(crate) fn check_tail(loaded: u64, cached_tail: u64, head: u64) -> Result<u64, CounterError> {
    check_between(loaded, cached_tail, head)
}

/// Consumer-side validation of a freshly loaded producer `head`.
#[inline]
pub(crate) fn check_head(
    loaded: u64,
    cached_head: u64,
    tail: u64,
    capacity: u64,
) -> Result<u64, CounterError> {
    check_between(loaded, cached_head, tail.wrapping_add(capacity))
}

/// Private geometry of one ring, computed from the private layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingGeom {
    pub(crate) id: RingId,
    /// Offset of the control block (head at +0, tail at +128, slots at +256).
    pub(crate) ctrl: usize,
    /// Slots.
    pub(crate) capacity: u64,
    /// Bytes between slots.
    pub(crate) stride: usize,
}

impl RingGeom {
    pub(crate) fn head_off(&self) -> usize {
        self.ctrl + RING_HEAD
    }
    pub(crate) fn tail_off(&self) -> usize {
        self.ctrl + RING_TAIL
    }
    fn mask(&self) -> u64 {
        self.capacity - 1
    }
    /// Byte offset of the slot for counter value `pos` (masked with the private mask).
    pub(crate) fn slot_off(&self, pos: u64) -> usize {
        let idx = (pos & self.mask()) as usize;
        debug_assert!((idx as u64) < self.capacity);
        self.ctrl + RING_SLOTS + idx * self.stride
    }
    /// One past the last byte of the ring.
    pub(crate) fn end(&self) -> usize {
        self.ctrl + RING_SLOTS + self.capacity as usize * self.stride
    }
}

/// Producer half: owns `head`.
#[derive(Debug)]
pub(crate) struct ProducerCore {
    pub(crate) map: Arc<Mapping>,
    pub(crate) g: RingGeom,
    /// Next position to write; the only copy this side trusts. Invariant:
    /// `cached_tail <= head <= cached_tail + capacity` (wrapping distances).
    head: u64,
    /// Last validated consumer tail.
    cached_tail: u64,
    fault: Option<RingFault>,
}

impl ProducerCore {
    /// A producer starting at `head` with the consumer at `tail` (host: 0, 0 at
    /// creation; worker: both read from the region when it takes its end). A `tail`
    /// that is not within one ring's worth behind `head` starts the ring faulted.
    pub(crate) fn new(map: Arc<Mapping>, g: RingGeom, head: u64, tail: u64) -> Self {
        debug_assert!(g.capacity.is_power_of_two() && g.end() <= map.len());
        let (cached_tail, fault) = match check_tail(tail, head.wrapping_sub(g.capacity), head) {
            Ok(t) => (t, None),
            Err(e) => (head, Some(e.fault(g.id))),
        };
        Self {
            map,
            g,
            head,
            cached_tail,
            fault,
        }
    }

    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    fn load_tail(&mut self) -> Result<(), RingFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        // SAFETY: tail_off is an 8-aligned in-bounds word of the private layout.
        let tail = unsafe { self.map.u64_at(self.g.tail_off()) };
        // Acquire pairs with the consumer's Release store of tail in `ConsumerCore::release`:
        // once we see tail past a slot, the consumer's reads of that slot are complete and
        // we may overwrite it.
        let t = tail.load(Ordering::Acquire);
        match check_tail(t, self.cached_tail, self.head) {
            Ok(t) => {
                self.cached_tail = t;
                Ok(())
            }
            Err(e) => {
                let f = e.fault(self.g.id);
                self.fault = Some(f);
                Err(f)
            }
        }
    }

    /// Offset of the slot to fill, or `None` if the ring is full. Wait-free.
    pub(crate) fn reserve(&mut self) -> Result<Option<usize>, RingFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        if self.head.wrapping_sub(self.cached_tail) >= self.g.capacity {
            self.load_tail()?;
            if self.head.wrapping_sub(self.cached_tail) >= self.g.capacity {
                return Ok(None);
            }
        }
        Ok(Some(self.g.slot_off(self.head)))
    }

    /// Publishes the slot returned by the last `reserve`.
    pub(crate) fn commit(&mut self) {
        debug_assert!(self.head.wrapping_sub(self.cached_tail) < self.g.capacity);
        self.head = self.head.wrapping_add(1);
        // SAFETY: head_off is an 8-aligned in-bounds word of the private layout.
        let head = unsafe { self.map.u64_at(self.g.head_off()) };
        // Release pairs with the consumer's Acquire load of head in `ConsumerCore::load_head`:
        // publishes the slot contents written before this store.
        head.store(self.head, Ordering::Release);
    }

    /// Free slots, after a fresh load of the consumer's tail.
    pub(crate) fn free(&mut self) -> Result<u32, RingFault> {
        self.load_tail()?;
        let used = self.head.wrapping_sub(self.cached_tail);
        debug_assert!(used <= self.g.capacity);
        Ok((self.g.capacity - used) as u32)
    }

    pub(crate) fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Re-synchronise after a reset: the consumer's tail was stored equal to our head.
    pub(crate) fn reset(&mut self) {
        self.cached_tail = self.head;
        self.fault = None;
        let head = self.map.word64(self.g.head_off());
        let tail = self.map.word64(self.g.tail_off());
        // Release pairs with the Acquire loads of the starting counters in
        // `WorkerRegion::worker_end` (a worker in another thread of this process; across
        // processes the fd handover and exec order them anyway).
        head.store(self.head, Ordering::Release);
        tail.store(self.head, Ordering::Release);
    }
}

/// Consumer half: owns `tail`.
#[derive(Debug)]
pub(crate) struct ConsumerCore {
    pub(crate) map: Arc<Mapping>,
    pub(crate) g: RingGeom,
    /// Next position to read; the only copy this side trusts. Invariant:
    /// `tail <= cached_head <= tail + capacity` (wrapping distances).
    tail: u64,
    /// Last validated producer head.
    cached_head: u64,
    fault: Option<RingFault>,
}

impl ConsumerCore {
    pub(crate) fn new(map: Arc<Mapping>, g: RingGeom, tail: u64) -> Self {
        debug_assert!(g.capacity.is_power_of_two() && g.end() <= map.len());
        Self {
            map,
            g,
            tail,
            cached_head: tail,
            fault: None,
        }
    }

    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }

    fn load_head(&mut self) -> Result<(), RingFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        // SAFETY: head_off is an 8-aligned in-bounds word of the private layout.
        let head = unsafe { self.map.u64_at(self.g.head_off()) };
        // Acquire pairs with the producer's Release store of head in `ProducerCore::commit`:
        // the slot contents written before it are visible to our reads.
        let h = head.load(Ordering::Acquire);
        match check_head(h, self.cached_head, self.tail, self.g.capacity) {
            Ok(h) => {
                self.cached_head = h;
                Ok(())
            }
            Err(e) => {
                let f = e.fault(self.g.id);
                self.fault = Some(f);
                Err(f)
            }
        }
    }

    /// Offset of the oldest unread slot, or `None` if the ring is empty. Wait-free.
    pub(crate) fn front(&mut self) -> Result<Option<usize>, RingFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        if self.cached_head == self.tail {
            self.load_head()?;
            if self.cached_head == self.tail {
                return Ok(None);
            }
        }
        Ok(Some(self.g.slot_off(self.tail)))
    }

    /// Releases the slot returned by the last `front`.
    pub(crate) fn release(&mut self) {
        debug_assert!(self.cached_head != self.tail);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: tail_off is an 8-aligned in-bounds word of the private layout.
        let tail = unsafe { self.map.u64_at(self.g.tail_off()) };
        // Release pairs with the producer's Acquire load of tail in `ProducerCore::load_tail`:
        // our reads of the slot happen before the producer may overwrite it.
        tail.store(self.tail, Ordering::Release);
    }

    /// Readable slots, after a fresh load of the producer's head.
    pub(crate) fn available(&mut self) -> Result<u32, RingFault> {
        self.load_head()?;
        let n = self.cached_head.wrapping_sub(self.tail);
        debug_assert!(n <= self.g.capacity);
        Ok(n as u32)
    }

    /// Marks the ring faulted (a bad block found by the caller).
    pub(crate) fn set_fault(&mut self, f: RingFault) -> RingFault {
        self.fault = Some(f);
        f
    }

    pub(crate) fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Re-synchronise after a reset: the producer's head was stored equal to our tail.
    pub(crate) fn reset(&mut self) {
        self.cached_head = self.tail;
        self.fault = None;
        let head = self.map.word64(self.g.head_off());
        let tail = self.map.word64(self.g.tail_off());
        // Release pairs with the Acquire loads in `WorkerRegion::worker_end`, as in
        // `ProducerCore::reset`.
        tail.store(self.tail, Ordering::Release);
        head.store(self.tail, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_between_classifies() {
        assert_eq!(check_between(5, 5, 5), Ok(5));
        assert_eq!(check_between(7, 5, 9), Ok(7));
        assert_eq!(check_between(4, 5, 9), Err(CounterError::WentBack));
        assert_eq!(check_between(10, 5, 9), Err(CounterError::Ahead));
        // across the u64 wrap
        assert_eq!(check_between(1, u64::MAX - 1, 3), Ok(1));
        assert_eq!(
            check_between(u64::MAX - 2, u64::MAX - 1, 3),
            Err(CounterError::WentBack)
        );
        assert_eq!(check_between(4, u64::MAX - 1, 3), Err(CounterError::Ahead));
        // far values
        assert_eq!(check_between(u64::MAX, 0, 4), Err(CounterError::WentBack));
        assert_eq!(check_between(1 << 62, 0, 4), Err(CounterError::Ahead));
    }

    #[test]
    fn head_may_lead_by_capacity_only() {
        assert_eq!(check_head(8, 0, 4, 4), Ok(8));
        assert_eq!(check_head(9, 0, 4, 4), Err(CounterError::Ahead));
        assert_eq!(check_head(3, 4, 4, 4), Err(CounterError::WentBack));
        assert_eq!(check_tail(3, 2, 4), Ok(3));
        assert_eq!(check_tail(5, 2, 4), Err(CounterError::Ahead));
        assert_eq!(check_tail(1, 2, 4), Err(CounterError::WentBack));
    }
}
