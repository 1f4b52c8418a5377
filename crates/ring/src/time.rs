//! [`MonoTime`]: CLOCK_MONOTONIC instants for deadlines.

use std::ops::{Add, Sub};
use std::time::Duration;

/// An instant on CLOCK_MONOTONIC, in nanoseconds.
///
/// The same clock in every process of the machine, so the host can hand a worker a
/// deadline and futex waits (`FUTEX_WAIT_BITSET`) take it as an absolute time.
/// [`MonoTime::now`] is a vDSO read: RT-safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime {
    ns: u64,
}

impl MonoTime {
    /// The current CLOCK_MONOTONIC time. RT-safe (vDSO, no syscall on Linux x86_64).
    pub fn now() -> Self {
        Self {
            ns: crate::sys::monotonic_ns(),
        }
    }

    /// Nanoseconds since the clock's (arbitrary, boot-time) origin.
    pub fn as_nanos(self) -> u64 {
        self.ns
    }

    /// The instant `ns` nanoseconds after the clock's origin.
    pub fn from_nanos(ns: u64) -> Self {
        Self { ns }
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.ns.saturating_sub(earlier.ns))
    }

    /// `self + d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Self {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self {
            ns: self.ns.saturating_add(add),
        }
    }
}

impl Add<Duration> for MonoTime {
    type Output = MonoTime;
    /// Saturates at the far future instead of overflowing.
    fn add(self, d: Duration) -> MonoTime {
        self.saturating_add(d)
    }
}

impl Sub<Duration> for MonoTime {
    type Output = MonoTime;
    /// Saturates at the clock's origin instead of underflowing.
    fn sub(self, d: Duration) -> MonoTime {
        let sub = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        MonoTime {
            ns: self.ns.saturating_sub(sub),
        }
    }
}

impl Sub<MonoTime> for MonoTime {
    type Output = Duration;
    /// Saturating: an earlier minus a later instant is zero.
    fn sub(self, earlier: MonoTime) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = MonoTime::from_nanos(10);
        assert_eq!((t + Duration::from_nanos(5)).as_nanos(), 15);
        assert_eq!((t - Duration::from_nanos(50)).as_nanos(), 0);
        assert_eq!(
            MonoTime::from_nanos(u64::MAX - 1) + Duration::from_secs(1),
            MonoTime::from_nanos(u64::MAX)
        );
        assert_eq!(t - MonoTime::from_nanos(20), Duration::ZERO);
        assert_eq!(MonoTime::from_nanos(20) - t, Duration::from_nanos(10));
    }

    #[test]
    fn now_is_monotonic() {
        let a = MonoTime::now();
        let b = MonoTime::now();
        assert!(b >= a);
        assert!(a.as_nanos() > 0);
    }
}
