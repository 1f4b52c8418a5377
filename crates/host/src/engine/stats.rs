//! Counters the audio thread writes and the supervisor thread reads for `status`:
//! plain atomics in memory allocated before the first cycle, no lock, no allocation.
//!
//! Every access is `Relaxed`: each counter is an independent statistic, nothing else
//! is published through it, and a reader that sees a value a cycle old is fine.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Sub-buckets per power of two in [`CycleHistogram`] (3 bits: ≤ 12.5 % error).
const SUB_BITS: u32 = 3;
const SUBS: usize = 1 << SUB_BITS;
/// Buckets: values up to 2^40 ns (18 minutes) with 8 sub-buckets per octave.
const BUCKETS: usize = (41 - SUB_BITS as usize) * SUBS + SUBS;

/// A log-linear histogram of durations in nanoseconds, fixed buckets, lock-free.
/// `record` is wait-free and allocation-free (audio thread); the readers
/// (`percentile`, `mean`, `max`, `count`) may run on any thread at any time.
#[derive(Debug)]
pub struct CycleHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Exact sum of the values (2^64 ns is 584 years of cycle time).
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for CycleHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl CycleHistogram {
    /// An empty histogram (allocates its buckets: call off the audio thread).
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < SUBS as u64 {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros(); // >= SUB_BITS
        let sub = (ns >> (exp - SUB_BITS)) as usize & (SUBS - 1);
        let index = (exp - SUB_BITS + 1) as usize * SUBS + sub;
        index.min(BUCKETS - 1)
    }

    /// The largest value that falls into bucket `index`.
    fn upper(index: usize) -> u64 {
        if index < SUBS {
            return index as u64;
        }
        let exp = (index / SUBS) as u32 + SUB_BITS - 1;
        let sub = (index % SUBS) as u64;
        ((SUBS as u64 + sub + 1) << (exp - SUB_BITS)) - 1
    }

    /// Adds one value. RT-safe.
    pub fn record(&self, ns: u64) {
        self.buckets[Self::bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(ns, Ordering::Relaxed);
        self.max.fetch_max(ns, Ordering::Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The mean of the values recorded (exact, not from the buckets), `None` when empty.
    /// JACK2's DSP load (`jack_cpu_load`) is this kind of figure: the mean cycle time
    /// over recent cycles as a share of the period. A reader racing `record` may pair a
    /// count and a sum one value apart.
    pub fn mean(&self) -> Option<f64> {
        let count = self.count();
        (count > 0).then(|| self.sum.load(Ordering::Relaxed) as f64 / count as f64)
    }

    /// The largest value recorded (exact).
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// An upper bound (within 12.5 %) of the `q`-quantile (`0 < q <= 1`), `None` when
    /// empty. Never above [`CycleHistogram::max`].
    pub fn percentile(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper(i).min(self.max()));
            }
        }
        Some(self.max())
    }

    /// Forgets everything (for benches between runs).
    pub fn clear(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum.store(0, Ordering::Relaxed);
        self.max.store(0, Ordering::Relaxed);
    }
}

/// Where a slot stands, as the audio thread last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotLink {
    /// No slot attached at this index.
    Vacant = 0,
    /// A worker is attached and its blocks are used.
    Up = 1,
    /// The ring faulted (a scribbling or broken worker): on its fallback until the
    /// supervisor has replaced the worker.
    Quarantined = 2,
    /// The worker is gone; the region was reset; waiting for `SlotUp`.
    Down = 3,
}

impl SlotLink {
    fn from_u32(v: u32) -> Self {
        match v {
            1 => SlotLink::Up,
            2 => SlotLink::Quarantined,
            3 => SlotLink::Down,
            _ => SlotLink::Vacant,
        }
    }
}

/// Per-slot counters.
#[derive(Debug, Default)]
pub struct SlotStats {
    link: AtomicU32,
    late: AtomicU64,
    fallback_blocks: AtomicU64,
    good_blocks: AtomicU64,
    sanitized_samples: AtomicU64,
    process_ns: AtomicU64,
    load_ppm: AtomicU32,
    ring_faults: AtomicU64,
    dropped_commands: AtomicU64,
    resets: AtomicU64,
    rings: AtomicU64,
    rings_woke: AtomicU64,
}

/// A copy of a slot's counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotSnapshot {
    /// Link state.
    pub link: SlotLink,
    /// Blocks that missed their deadline while the worker was attached (xruns
    /// attributed to this slot).
    pub late: u64,
    /// Blocks replaced by the fallback for any reason (late, down, quarantined).
    pub fallback_blocks: u64,
    /// Blocks taken from the worker.
    pub good_blocks: u64,
    /// Samples the host had to repair (NaN, ∞, subnormal, out of range).
    pub sanitized_samples: u64,
    /// The worker's own time for its last block (from the region's `process_ns`).
    pub process_ns: u64,
    /// `process_ns` as parts per million of the block period.
    pub load_ppm: u32,
    /// Ring protocol violations seen (each quarantines the slot).
    pub ring_faults: u64,
    /// Commands that did not fit the command ring.
    pub dropped_commands: u64,
    /// Times the region was reset for a new worker.
    pub resets: u64,
    /// Doorbell rings for a cycle's block.
    pub rings: u64,
    /// Rings that found the worker asleep and had to wake it (a futex wake; the worker
    /// starts after its wake-up latency). With pre-wake working, few of `rings`.
    pub rings_woke: u64,
}

impl SlotStats {
    pub(crate) fn set_link(&self, l: SlotLink) {
        self.link.store(l as u32, Ordering::Relaxed);
    }
    pub(crate) fn late(&self) {
        self.late.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn fallback(&self) {
        self.fallback_blocks.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn good(&self, process_ns: u64, period_ns: u64, sanitized: u32) {
        self.good_blocks.fetch_add(1, Ordering::Relaxed);
        if sanitized > 0 {
            self.sanitized_samples
                .fetch_add(u64::from(sanitized), Ordering::Relaxed);
        }
        self.process_ns.store(process_ns, Ordering::Relaxed);
        let ppm = process_ns.saturating_mul(1_000_000) / period_ns.max(1);
        self.load_ppm
            .store(ppm.min(u64::from(u32::MAX)) as u32, Ordering::Relaxed);
    }
    pub(crate) fn ring_fault(&self) {
        self.ring_faults.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn dropped_command(&self) {
        self.dropped_commands.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn reset(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn rang(&self, woke: bool) {
        self.rings.fetch_add(1, Ordering::Relaxed);
        if woke {
            self.rings_woke.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub(crate) fn clear(&self) {
        for a in [
            &self.late,
            &self.fallback_blocks,
            &self.good_blocks,
            &self.sanitized_samples,
            &self.process_ns,
            &self.ring_faults,
            &self.dropped_commands,
            &self.resets,
            &self.rings,
            &self.rings_woke,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        self.load_ppm.store(0, Ordering::Relaxed);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> SlotSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SlotSnapshot {
            link: SlotLink::from_u32(self.link.load(Ordering::Relaxed)),
            late: r(&self.late),
            fallback_blocks: r(&self.fallback_blocks),
            good_blocks: r(&self.good_blocks),
            sanitized_samples: r(&self.sanitized_samples),
            process_ns: r(&self.process_ns),
            load_ppm: self.load_ppm.load(Ordering::Relaxed),
            ring_faults: r(&self.ring_faults),
            dropped_commands: r(&self.dropped_commands),
            resets: r(&self.resets),
            rings: r(&self.rings),
            rings_woke: r(&self.rings_woke),
        }
    }
}

/// Everything `status` reads from the engine. Shared (`Arc`) between the audio thread
/// and the control side; sized once for the engine's slot capacity.
#[derive(Debug)]
pub struct EngineStats {
    /// Cycles run.
    cycles: AtomicU64,
    /// The host's own time per cycle (from the start of `process` to the end of the
    /// mix, waits included).
    pub cycle_time: CycleHistogram,
    /// The block period in ns.
    pub period_ns: u64,
    slots: Box<[SlotStats]>,
}

impl EngineStats {
    pub(crate) fn new(capacity: usize, period_ns: u64) -> Self {
        Self {
            cycles: AtomicU64::new(0),
            cycle_time: CycleHistogram::new(),
            period_ns,
            slots: (0..capacity).map(|_| SlotStats::default()).collect(),
        }
    }

    pub(crate) fn cycle_done(&self, ns: u64) {
        self.cycle_time.record(ns);
        self.cycles.fetch_add(1, Ordering::Relaxed);
    }

    /// Cycles run so far.
    pub fn cycles(&self) -> u64 {
        self.cycles.load(Ordering::Relaxed)
    }

    /// The counters of slot `id` (`None` past the capacity).
    pub fn slot(&self, id: usize) -> Option<&SlotStats> {
        self.slots.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values_within_an_eighth() {
        for ns in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            123_456,
            1 << 30,
            5 << 35,
        ] {
            let b = CycleHistogram::bucket(ns);
            let up = CycleHistogram::upper(b);
            assert!(up >= ns, "{ns} in bucket {b} whose upper bound is {up}");
            assert!(
                up as f64 <= ns as f64 * 1.125 + 1.0,
                "{ns}: bound {up} too loose"
            );
            if b > 0 {
                assert!(CycleHistogram::upper(b - 1) < ns, "{ns} belongs lower");
            }
        }
    }

    #[test]
    fn percentiles_follow_the_recorded_distribution() {
        let h = CycleHistogram::new();
        assert_eq!(h.percentile(0.5), None);
        for ns in 1..=1000u64 {
            h.record(ns * 1000);
        }
        let p50 = h.percentile(0.5).unwrap();
        assert!((500_000..=562_500).contains(&p50), "p50 {p50}");
        let p99 = h.percentile(0.99).unwrap();
        assert!((990_000..=1_000_000).contains(&p99), "p99 {p99}");
        assert_eq!(h.percentile(1.0), Some(1_000_000));
        assert_eq!(h.max(), 1_000_000);
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn the_mean_is_exact_and_clear_forgets_it() {
        let h = CycleHistogram::new();
        assert_eq!(h.mean(), None);
        // A skewed distribution: 99 short cycles and one long one pull the mean far
        // above the median, which the buckets alone could not tell exactly.
        for _ in 0..99 {
            h.record(10_000);
        }
        h.record(1_010_000);
        assert_eq!(h.mean(), Some(20_000.0));
        assert!(h.percentile(0.5).unwrap() <= 11_250);
        h.clear();
        assert_eq!(h.mean(), None);
        h.record(7);
        assert_eq!(h.mean(), Some(7.0));
    }

    #[test]
    fn slot_load_is_process_time_over_the_period() {
        let s = SlotStats::default();
        s.good(250, 1000, 3);
        let snap = s.snapshot();
        assert_eq!(snap.load_ppm, 250_000);
        assert_eq!(snap.sanitized_samples, 3);
        assert_eq!(snap.good_blocks, 1);
    }
}
