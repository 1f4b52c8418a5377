//! Pre-wake: the worker wakes a little before the host's next expected doorbell and polls
//! for it, instead of sleeping on the futex until the ring.
//!
//! Why: on a machine whose idle CPUs halt (a VM especially), a futex wake of a sleeping
//! worker costs tens of microseconds before the worker runs — on the 2-vCPU KVM guest of
//! docs/PERFORMANCE-engine.md about 45 µs, a third of a 64-frame budget's 3 % target by
//! itself. A worker that is already polling when the host rings starts at once, and the
//! host's ring finds nobody asleep, so it makes no syscall either.
//!
//! The cost is CPU: at most two windows of polling per period. So it is off by default
//! and asked for per slot (`prewake_us`, or `[engine] worker_prewake_us`), which the host
//! hands over as `SLOTPOOL_PREWAKE_US`.
//!
//! The expected ring is predicted from the doorbells the worker has seen, not from the
//! nominal period: a backend whose callbacks carry several cycles at once rings in bursts,
//! and then the intervals disagree and the worker simply sleeps as without pre-wake.

use std::time::Duration;

use slotpool_ring::MonoTime;

/// When to wake and how long to poll for the next doorbell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Sleep (on the doorbell, so an early ring still ends it) until this instant.
    pub wake_at: MonoTime,
    /// Then poll the doorbell until this instant at most; after it, sleep untimed.
    pub poll_until: MonoTime,
}

/// The predictor: the last two intervals between doorbells that brought blocks.
#[derive(Clone, Copy, Debug)]
pub struct Prewake {
    window: Duration,
    last: Option<MonoTime>,
    interval: Option<Duration>,
    /// The last two intervals agreed to within half a window.
    steady: bool,
}

impl Prewake {
    /// `window`: how long before the expected ring the worker wakes, and how long after
    /// it the worker keeps polling. Zero turns pre-wake off.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last: None,
            interval: None,
            steady: false,
        }
    }

    /// The worker saw a ring that brought blocks at `at`.
    pub fn ring_seen(&mut self, at: MonoTime) {
        if let Some(last) = self.last {
            let interval = at.saturating_duration_since(last);
            self.steady = self
                .interval
                .is_some_and(|before| before.abs_diff(interval) <= self.window / 2);
            self.interval = Some(interval);
        }
        self.last = Some(at);
    }

    /// Forgets the history (the rings stopped, or came in a burst): no plan until two
    /// steady intervals have been seen again.
    pub fn forget(&mut self) {
        *self = Self::new(self.window);
    }

    /// The plan for the next ring, seen from `now`: `None` when pre-wake is off, the
    /// rings are not steady, the period is too short for it (under four windows: the
    /// worker would poll most of the time), or the expected ring's window has passed.
    pub fn plan(&self, now: MonoTime) -> Option<Plan> {
        if self.window.is_zero() || !self.steady {
            return None;
        }
        let (last, interval) = (self.last?, self.interval?);
        if interval < self.window * 4 {
            return None;
        }
        let expected = last.saturating_add(interval);
        let poll_until = expected.saturating_add(self.window);
        if poll_until <= now {
            return None;
        }
        let wake_at = MonoTime::from_nanos(
            expected
                .as_nanos()
                .saturating_sub(u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX)),
        );
        Some(Plan {
            wake_at,
            poll_until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn at(ns: u64) -> MonoTime {
        MonoTime::from_nanos(ns)
    }

    fn fed(window_us: u64, rings: &[u64]) -> Prewake {
        let mut p = Prewake::new(Duration::from_micros(window_us));
        for &r in rings {
            p.ring_seen(at(r));
        }
        p
    }

    #[test]
    fn steady_rings_give_a_window_around_the_next_one() {
        let p = fed(100, &[10 * MS, 11 * MS, 12 * MS]);
        assert_eq!(
            p.plan(at(12 * MS + 1000)),
            Some(Plan {
                wake_at: at(13 * MS - 100_000),
                poll_until: at(13 * MS + 100_000),
            })
        );
    }

    #[test]
    fn no_plan_before_two_intervals_or_when_off() {
        assert_eq!(fed(100, &[]).plan(at(0)), None);
        assert_eq!(fed(100, &[10 * MS]).plan(at(10 * MS)), None);
        assert_eq!(fed(100, &[10 * MS, 11 * MS]).plan(at(11 * MS)), None);
        assert_eq!(fed(0, &[10 * MS, 11 * MS, 12 * MS]).plan(at(12 * MS)), None);
    }

    #[test]
    fn bursts_and_jitter_beyond_half_a_window_turn_it_off_until_steady_again() {
        // A backend that runs four cycles per callback: short, short, short, long.
        let burst = fed(100, &[0, 10_000, 20_000, 30_000, 4 * MS]);
        assert_eq!(burst.plan(at(4 * MS)), None);
        // Jitter within half a window keeps it on.
        let jittery = fed(100, &[0, MS, 2 * MS + 40_000]);
        assert!(jittery.plan(at(2 * MS + 40_000)).is_some());
        let mut p = fed(100, &[0, MS, 2 * MS + 60_000]);
        assert_eq!(p.plan(at(2 * MS + 60_000)), None);
        p.ring_seen(at(3 * MS + 120_000));
        assert!(p.plan(at(3 * MS + 120_000)).is_some());
        p.forget();
        assert_eq!(p.plan(at(3 * MS + 120_000)), None);
    }

    #[test]
    fn a_period_under_four_windows_or_a_missed_ring_gives_no_plan() {
        assert_eq!(fed(300, &[0, MS, 2 * MS]).plan(at(2 * MS)), None);
        assert!(fed(250, &[0, MS, 2 * MS]).plan(at(2 * MS)).is_some());
        // The expected ring (3 ms) and its window have passed: sleep untimed.
        assert_eq!(fed(100, &[0, MS, 2 * MS]).plan(at(3 * MS + 100_000)), None);
        assert!(
            fed(100, &[0, MS, 2 * MS])
                .plan(at(3 * MS + 99_999))
                .is_some()
        );
    }
}
