//! Handing a new [`Schedule`](crate::Schedule) from the control thread to the
//! audio thread, and the old one back to be dropped.
//!
//! Two wait-free SPSC queues ([`rtrb`]) of `Box<T>`: *fresh* carries new plans
//! to the audio thread, *spent* carries replaced ones back. The audio thread's
//! [`Receiver::pickup`] moves boxes between the queues and never allocates, frees,
//! locks or blocks; every allocation and free happens in [`Publisher`] calls on the
//! control side.
//!
//! `T` is the schedule by default; an engine that keeps tables indexed by
//! [`NodeId`](crate::NodeId) (its slot handles, a [`Workspace`](crate::Workspace))
//! hands them over in one `T` together with the schedule they were built for.
//!
//! # Why the spent queue never overflows
//! The publisher counts the boxes it has sent that have not come back yet
//! (`in_flight`, the receiver's initial box included) and refuses to publish past
//! [`Publisher::limit`]. Every such box is in *fresh*, is the receiver's current
//! one, or is in *spent*; so each queue holds at most `limit - 1` boxes and both
//! are built with `limit` slots. The receiver still checks for a free slot before
//! it takes a fresh plan, so even a broken count could only delay a pickup, never
//! make the audio thread drop a box.
//!
//! # Shutdown
//! Dropping the [`Receiver`] drops its current plan on the thread that drops it:
//! when the audio thread stops, hand the receiver back to the control side (for
//! example as the audio thread's return value) and drop it there. Plans still in
//! the queues are dropped with the last of the two ends.
//!
//! ```
//! use slotpool_router::{PatchRouter, handover};
//!
//! let patch = PatchRouter::new(2, 2).unwrap();
//! let (mut publisher, mut receiver) = handover(Box::new(patch.compile()), 4);
//! // control thread, after an edit:
//! publisher.publish(Box::new(patch.compile())).unwrap();
//! // audio thread, at the start of every cycle:
//! receiver.pickup();
//! let schedule = receiver.current();
//! # assert_eq!(schedule.steps().len(), 0);
//! // control thread, from time to time (publish does it too):
//! publisher.collect();
//! ```

use std::fmt;

use rtrb::{Consumer, Producer, RingBuffer};

/// The control side: publishes new plans and drops the returned ones.
pub struct Publisher<T = crate::Schedule> {
    fresh: Producer<Box<T>>,
    spent: Consumer<Box<T>>,
    /// Boxes sent (the initial one included) and not yet collected.
    in_flight: usize,
    limit: usize,
}

/// The audio side: holds the current plan and swaps in the newest published one.
pub struct Receiver<T = crate::Schedule> {
    current: Box<T>,
    fresh: Consumer<Box<T>>,
    spent: Producer<Box<T>>,
}

/// [`Publisher::publish`] was refused: the audio side has not picked up or given
/// back enough plans yet (it is stopped, or the control side publishes faster than
/// cycles run). The plan is handed back; try again after a cycle.
pub struct Busy<T>(pub Box<T>);

impl<T> fmt::Debug for Busy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Busy(..)")
    }
}

impl<T> fmt::Display for Busy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the audio thread has not taken the schedules published before; publish again \
             after it has run a cycle",
        )
    }
}

impl<T> std::error::Error for Busy<T> {}

/// Builds a handover whose audio side starts with `initial`. At most `limit` plans
/// (`initial` included, `limit >= 2`) are out of the control side's hands at once.
///
/// # Panics
/// If `limit < 2` (then nothing could ever be published).
pub fn handover<T>(initial: Box<T>, limit: usize) -> (Publisher<T>, Receiver<T>) {
    assert!(
        limit >= 2,
        "a handover needs room for the current plan and a new one"
    );
    let (fresh_tx, fresh_rx) = RingBuffer::new(limit);
    let (spent_tx, spent_rx) = RingBuffer::new(limit);
    (
        Publisher {
            fresh: fresh_tx,
            spent: spent_rx,
            in_flight: 1,
            limit,
        },
        Receiver {
            current: initial,
            fresh: fresh_rx,
            spent: spent_tx,
        },
    )
}

impl<T> Publisher<T> {
    /// Sends `plan` to the audio side, which takes it at the start of its next
    /// cycle. Drops the plans the audio side has given back first.
    ///
    /// # Errors
    /// [`Busy`] with `plan` when `limit` plans are out already.
    pub fn publish(&mut self, plan: Box<T>) -> Result<(), Busy<T>> {
        self.collect();
        if self.in_flight >= self.limit {
            return Err(Busy(plan));
        }
        match self.fresh.push(plan) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(rtrb::PushError::Full(plan)) => Err(Busy(plan)),
        }
    }

    /// Drops every plan the audio side has given back; returns how many.
    pub fn collect(&mut self) -> usize {
        let mut dropped = 0;
        while let Ok(plan) = self.spent.pop() {
            drop(plan);
            dropped += 1;
        }
        self.in_flight -= dropped;
        dropped
    }

    /// How many plans are out of the control side's hands (the audio side's current
    /// one included). After a pickup and a [`collect`](Self::collect) this is 1.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The most plans that may be out at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the audio side has been dropped.
    pub fn is_abandoned(&self) -> bool {
        self.fresh.is_abandoned()
    }
}

impl<T> Receiver<T> {
    /// Takes the newest published plan, if any, and sends the replaced ones back.
    /// Returns whether the current plan changed. Call it at the start of a cycle,
    /// on the audio thread: wait-free, and it allocates and frees nothing.
    pub fn pickup(&mut self) -> bool {
        let mut changed = false;
        // Take a fresh plan only when the replaced one has a slot to go back in.
        while self.spent.slots() > 0 {
            let Ok(plan) = self.fresh.pop() else {
                break;
            };
            let old = std::mem::replace(&mut self.current, plan);
            // Cannot fail: this is the queue's only producer and it saw a free slot;
            // the consumer can only add free slots in between.
            if self.spent.push(old).is_err() {
                unreachable!("a free slot was checked just before the push");
            }
            changed = true;
        }
        changed
    }

    /// The current plan.
    pub fn current(&self) -> &T {
        &self.current
    }

    /// The current plan, mutably: the audio side owns it until it is replaced, so
    /// a `T` may carry audio-thread state built with the schedule (a
    /// [`Workspace`](crate::Workspace), per-step fallback buffers).
    pub fn current_mut(&mut self) -> &mut T {
        &mut self.current
    }
}

impl<T> fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("in_flight", &self.in_flight)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<T: fmt::Debug> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickup_takes_the_newest_and_returns_the_rest() {
        let (mut tx, mut rx) = handover(Box::new(0), 4);
        assert!(!rx.pickup());
        tx.publish(Box::new(1)).unwrap();
        tx.publish(Box::new(2)).unwrap();
        assert_eq!(tx.in_flight(), 3);
        assert!(rx.pickup());
        assert_eq!(*rx.current(), 2);
        assert_eq!(
            tx.collect(),
            2,
            "initial plan and the skipped one come back"
        );
        assert_eq!(tx.in_flight(), 1);
    }

    #[test]
    fn publish_is_refused_while_the_audio_side_lags() {
        let (mut tx, mut rx) = handover(Box::new(0), 2);
        tx.publish(Box::new(1)).unwrap();
        let Busy(back) = tx.publish(Box::new(2)).unwrap_err();
        assert_eq!(*back, 2, "the refused plan is handed back");
        assert!(rx.pickup());
        tx.publish(back).unwrap();
        assert!(rx.pickup());
        assert_eq!(*rx.current(), 2);
    }

    #[test]
    fn pickup_never_overfills_the_spent_queue() {
        // Publish and pick up many times without collecting in between pickups:
        // publish collects, so the limit holds and pickup always finds a slot.
        let (mut tx, mut rx) = handover(Box::new(0u64), 3);
        for i in 1..100 {
            while let Err(Busy(plan)) = tx.publish(Box::new(i)) {
                assert!(rx.pickup() || tx.collect() > 0, "stuck at {i}: {plan}");
            }
            if i % 3 == 0 {
                rx.pickup();
            }
        }
        rx.pickup();
        assert_eq!(*rx.current(), 99);
    }
}
