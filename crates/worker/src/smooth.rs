//! Parameter smoothing: a linear ramp so that a parameter change glides instead of jumping
//! (no zipper noise).
//!
//! The ramp is deterministic: it depends only on the sequence of targets, the ramp length
//! and how many samples were taken, never on time or thread. Each step adds the same `f32`
//! increment and the last step lands exactly on the target.

/// Default ramp length for continuous parameters.
pub const DEFAULT_RAMP_SECONDS: f32 = 0.02;

/// A linearly ramping value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Smoother {
    current: f32,
    target: f32,
    step: f32,
    remaining: u32,
    ramp_len: u32,
}

impl Smoother {
    /// A smoother resting at `value`, ramping over `ramp_len` samples on each change
    /// (`0` means changes apply at once).
    pub fn new(value: f32, ramp_len: u32) -> Self {
        Self {
            current: value,
            target: value,
            step: 0.0,
            remaining: 0,
            ramp_len,
        }
    }

    /// Ramp length for `seconds` at `sample_rate`, at least one sample.
    pub fn ramp_len_for(sample_rate: f32, seconds: f32) -> u32 {
        ((sample_rate * seconds).round() as u32).max(1)
    }

    /// Changes the ramp length used by later [`Smoother::set_target`] calls.
    pub fn set_ramp_len(&mut self, ramp_len: u32) {
        self.ramp_len = ramp_len;
    }

    /// Starts a ramp from the current value to `target`.
    pub fn set_target(&mut self, target: f32) {
        self.target = target;
        if self.ramp_len == 0 || target == self.current {
            self.jump(target);
        } else {
            self.remaining = self.ramp_len;
            self.step = (target - self.current) / self.ramp_len as f32;
        }
    }

    /// Sets the value at once, with no ramp.
    pub fn jump(&mut self, value: f32) {
        self.current = value;
        self.target = value;
        self.step = 0.0;
        self.remaining = 0;
    }

    /// Advances one sample and returns the value for it.
    #[inline]
    pub fn next_value(&mut self) -> f32 {
        if self.remaining > 0 {
            self.remaining -= 1;
            self.current = if self.remaining == 0 {
                self.target
            } else {
                self.current + self.step
            };
        }
        self.current
    }

    /// Advances `n` samples and returns the value reached (same result as calling
    /// [`Smoother::next_value`] `n` times).
    pub fn advance(&mut self, n: u32) -> f32 {
        for _ in 0..n.min(self.remaining) {
            self.next_value();
        }
        self.current
    }

    /// The value of the last sample taken.
    pub fn current(&self) -> f32 {
        self.current
    }

    /// The value the ramp is heading for.
    pub fn target(&self) -> f32 {
        self.target
    }

    /// Whether a ramp is in progress.
    pub fn is_smoothing(&self) -> bool {
        self.remaining > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_is_monotonic_and_lands_exactly_on_target() {
        let mut s = Smoother::new(0.0, 8);
        s.set_target(1.0);
        let mut last = 0.0;
        for i in 0..8 {
            let v = s.next_value();
            assert!(v > last, "step {i}: {v} <= {last}");
            last = v;
        }
        assert_eq!(last, 1.0);
        assert!(!s.is_smoothing());
        assert_eq!(s.next_value(), 1.0);
    }

    #[test]
    fn retarget_mid_ramp_starts_from_the_current_value() {
        let mut s = Smoother::new(0.0, 4);
        s.set_target(4.0);
        assert_eq!(s.next_value(), 1.0);
        assert_eq!(s.next_value(), 2.0);
        s.set_target(0.0);
        assert_eq!(s.next_value(), 1.5);
        s.advance(10);
        assert_eq!(s.current(), 0.0);
    }

    #[test]
    fn advance_equals_repeated_next_value() {
        let mut a = Smoother::new(0.3, 100);
        let mut b = a;
        a.set_target(-7.25);
        b.set_target(-7.25);
        for _ in 0..37 {
            a.next_value();
        }
        assert_eq!(b.advance(37).to_bits(), a.current().to_bits());
    }

    #[test]
    fn zero_ramp_applies_at_once() {
        let mut s = Smoother::new(1.0, 0);
        s.set_target(2.0);
        assert!(!s.is_smoothing());
        assert_eq!(s.next_value(), 2.0);
    }
}
