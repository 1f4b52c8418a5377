//! Doorbells, heartbeats and status words of the header.
//!
//! `doorbell` (host-written) and `done` (worker-written) are shared futex words; the
//! protocol that skips the wake syscall when the peer is running is in [`crate::sys`].
//! Every value read from a word the peer writes is untrusted: it is returned as data
//! (a number, [`WorkerState::Invalid`]) and never used as an index or a loop bound.

use std::sync::Arc;
use std::time::Duration;

use crate::layout::hdr;
use crate::mapping::Mapping;
use crate::sync::{AtomicU32, AtomicU64, Ordering, fence};
use crate::sys::{self, FutexWait};
use crate::time::MonoTime;

// The interrupt flag is host-private memory, not a region word: plain std atomics
// (also under loom, where no model checks it).
use std::sync::atomic::{AtomicU32 as StdAtomicU32, Ordering as StdOrdering};

/// What the worker says it is doing (`state` word of the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerState {
    /// 0: no worker has attached (or the host reset the region).
    Empty,
    /// 1: the worker opened the region and is announcing itself.
    Starting,
    /// 2: processing blocks.
    Running,
    /// 3: shutting down cleanly.
    Stopping,
    /// 4: the worker reported a fault (see the fault code).
    Faulted,
    /// Any other value: written by a broken or hostile worker.
    Invalid(u32),
}

impl WorkerState {
    /// The header encoding.
    pub fn to_u32(self) -> u32 {
        match self {
            WorkerState::Empty => 0,
            WorkerState::Starting => 1,
            WorkerState::Running => 2,
            WorkerState::Stopping => 3,
            WorkerState::Faulted => 4,
            WorkerState::Invalid(v) => v,
        }
    }

    /// Decodes a header value; unknown values are [`WorkerState::Invalid`].
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => WorkerState::Empty,
            1 => WorkerState::Starting,
            2 => WorkerState::Running,
            3 => WorkerState::Stopping,
            4 => WorkerState::Faulted,
            v => WorkerState::Invalid(v),
        }
    }
}

/// How a bounded wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The word moved away from the value the caller had seen.
    Signalled,
    /// The deadline passed first.
    TimedOut,
}

/// How an untimed wait ([`WorkerBell::wait_doorbell_untimed`]) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UntimedOutcome {
    /// The word moved away from the value the caller had seen.
    Signalled,
    /// A signal handler installed without `SA_RESTART` ran (EINTR) and the word had not
    /// moved. With `SA_RESTART` the kernel restarts the wait and this never happens.
    Interrupted,
}

/// Header words, by offset; all accessors go through the private offsets.
#[derive(Clone, Debug)]
pub(crate) struct Words {
    map: Arc<Mapping>,
}

impl Words {
    pub(crate) fn new(map: Arc<Mapping>) -> Self {
        debug_assert!(map.len() >= hdr::LEN);
        Self { map }
    }
    pub(crate) fn w64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(hdr::WORDS64.contains(&off));
        self.map.word64(off)
    }
    pub(crate) fn w32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(hdr::WORDS32.contains(&off));
        self.map.word32(off)
    }
}

/// Waits until `word != seen` or `deadline`, announcing the sleep in `waiting`.
/// Bounded by `deadline` whatever the peer does to either word.
///
/// Protocol (no lost wake-up, no syscall while the peer runs), a Dekker pair of SeqCst
/// fences: the waiter stores `waiting = 1`, fence, loads `word`; the waker
/// ([`bump_and_wake`]) bumps `word`, fence, loads `waiting`. The two fences are ordered
/// one way or the other, so either the waiter's load sees the bump (and it does not
/// sleep) or the waker's load sees the flag (and it calls FUTEX_WAKE). A bump that
/// lands between the waiter's load and its sleep is caught by the kernel, which
/// re-checks `word == seen` atomically with queueing the waiter.
fn wait_word(word: &AtomicU32, waiting: &AtomicU32, seen: u32, deadline: MonoTime) -> WaitOutcome {
    loop {
        // Acquire pairs with the waker's Release RMW of the word in `bump_and_wake`:
        // what it published before ringing is visible once we see the new value.
        if word.load(Ordering::Acquire) != seen {
            return WaitOutcome::Signalled;
        }
        if MonoTime::now() >= deadline {
            return WaitOutcome::TimedOut;
        }
        let r = sleep_announced(word, waiting, seen, || {
            sys::futex_wait_until(word, seen, deadline.as_nanos())
        });
        if r == FutexWait::TimedOut {
            // Last look so a wake racing with the timeout is not reported as late.
            // Acquire: as the first load.
            return if word.load(Ordering::Acquire) != seen {
                WaitOutcome::Signalled
            } else {
                WaitOutcome::TimedOut
            };
        }
        // Returned or Interrupted: loop; only the word or the deadline ends this wait.
    }
}

/// Polls `word` until it differs from `seen` (true) or `until` passes (false). Loads,
/// the clock (vDSO) and the CPU's spin-wait hint only: no syscall, bounded by `until`.
#[cfg(not(loom))]
fn spin_until_changed(word: &AtomicU32, seen: u32, until: MonoTime) -> bool {
    loop {
        // Acquire: as in `wait_word`.
        if word.load(Ordering::Acquire) != seen {
            return true;
        }
        if MonoTime::now() >= until {
            return false;
        }
        for _ in 0..16 {
            std::hint::spin_loop();
        }
    }
}

/// [`wait_word`] without a deadline: waits until `word != seen`, or until a signal
/// handler without `SA_RESTART` interrupts the sleep. Same flag protocol, but the sleep is
/// a plain `FUTEX_WAIT` with no timeout, so no hrtimer is armed and no clock is read.
/// Only the worker's doorbell wait uses it; what bounds it is the host's promise to ring
/// the doorbell while idle (docs/ABI.md "Idle rings").
fn wait_word_untimed(word: &AtomicU32, waiting: &AtomicU32, seen: u32) -> UntimedOutcome {
    loop {
        // Acquire: as in `wait_word`.
        if word.load(Ordering::Acquire) != seen {
            return UntimedOutcome::Signalled;
        }
        let r = sleep_announced(word, waiting, seen, || sys::futex_wait(word, seen));
        if r == FutexWait::Interrupted {
            // Acquire: as above. A ring that raced with the signal wins.
            return if word.load(Ordering::Acquire) != seen {
                UntimedOutcome::Signalled
            } else {
                UntimedOutcome::Interrupted
            };
        }
        // Returned (woken, spurious, or the word moved before the sleep): re-check.
    }
}

/// The waiter's half of the protocol around one `sleep` (a futex wait on `word` for
/// `seen`): announce the sleep in `waiting`, fence, and sleep only if `word` still holds
/// `seen`; clear the flag afterwards.
fn sleep_announced(
    word: &AtomicU32,
    waiting: &AtomicU32,
    seen: u32,
    sleep: impl FnOnce() -> FutexWait,
) -> FutexWait {
    // Relaxed store + SeqCst fence: the waiter's half of the fence pair (see `wait_word`).
    waiting.store(1, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    // Acquire pairs with the waker's Release RMW of the word in `bump_and_wake`.
    let r = if word.load(Ordering::Acquire) == seen {
        sleep()
    } else {
        FutexWait::Returned
    };
    // Relaxed: clearing the flag late only costs the peer a needless wake.
    waiting.store(0, Ordering::Relaxed);
    r
}

/// Bumps `word` and wakes the peer only if its `waiting` flag is set.
///
/// The doorbell has two host-side callers, the audio thread ([`HostBell::ring`]) and the
/// supervisor ([`Monitor::nudge`]): both bump with an RMW, so no bump is lost, and the
/// word is only ever compared for change. A worker's Acquire load that reads a nudge's
/// value still synchronises with an earlier ring: the nudge's RMW continues the ring's
/// release sequence.
/// Returns whether the peer was flagged as sleeping (and so was woken).
fn bump_and_wake(word: &AtomicU32, waiting: &AtomicU32) -> bool {
    // Release pairs with the waiter's Acquire loads of the word in `wait_word` (and
    // with `HostBell::done_count` / `WorkerBell::doorbell`): everything written before
    // ringing (pushed blocks, the cycle word) is visible to a peer that sees the bump.
    word.fetch_add(1, Ordering::Release);
    // The waker's half of the SeqCst fence pair (see `wait_word`).
    fence(Ordering::SeqCst);
    // Relaxed: ordered by the fence pair.
    if waiting.load(Ordering::Relaxed) != 0 {
        sys::futex_wake(word);
        return true;
    }
    false
}

/// Host side of the doorbell/done pair. Owned by the audio thread (in [`crate::HostEnd`]).
#[derive(Debug)]
pub struct HostBell {
    words: Words,
    /// Host-private (never in the region): bumped by [`Interrupter::interrupt`].
    gone: Arc<StdAtomicU32>,
    /// The value of `gone` at the last [`HostBell::acknowledge`].
    gone_seen: u32,
    /// How long [`HostBell::wait_done`] polls `done` before it sleeps.
    spin: Duration,
}

impl HostBell {
    pub(crate) fn new(words: Words) -> Self {
        Self {
            words,
            gone: Arc::new(StdAtomicU32::new(0)),
            gone_seen: 0,
            spin: Duration::ZERO,
        }
    }

    /// Sets how long [`HostBell::wait_done`] polls `done` (loads only, no syscall) before
    /// it announces a sleep. A worker that answers within the spin then costs the host
    /// no futex wake-up — on a VM, waking an idle vCPU from the futex costs tens of
    /// microseconds — and costs the worker no FUTEX_WAKE either, since the host is not
    /// flagged as waiting. Zero (the default) sleeps at once. The spin never runs past
    /// the wait's deadline.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// A handle another host thread (the supervisor) uses to tell this side that the
    /// worker is gone. Any number; `Send + Sync`.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter {
            words: self.words.clone(),
            gone: Arc::clone(&self.gone),
        }
    }

    /// Whether [`Interrupter::interrupt`] was called since the last
    /// [`HostBell::acknowledge`]: the worker is gone, waiting for it is pointless.
    /// Host-private memory: nothing the worker writes can set or clear it. RT-safe.
    pub fn interrupted(&self) -> bool {
        // Acquire pairs with the Release RMW in `Interrupter::interrupt`; nothing but
        // the flag itself is published through it, Acquire only keeps it simple.
        self.gone.load(StdOrdering::Acquire) != self.gone_seen
    }

    /// Takes note of every interrupt so far (the region was reset for a new worker).
    pub fn acknowledge(&mut self) {
        // Acquire: as in `interrupted`.
        self.gone_seen = self.gone.load(StdOrdering::Acquire);
    }

    /// [`HostBell::ring_at`] now. RT-safe (a vDSO clock read and a futex wake at most).
    pub fn ring(&self, cycle: u64) -> bool {
        self.ring_at(cycle, MonoTime::now())
    }

    /// Stores `cycle` and the ring's time `at` (the worker predicts the next ring from
    /// these; a caller ringing several slots at once reads the clock once for all),
    /// bumps the doorbell and wakes the worker only if it sleeps. Returns whether it
    /// slept (the ring cost a futex wake, and the worker starts only after its wake-up
    /// latency). RT-safe (a futex wake at most).
    pub fn ring_at(&self, cycle: u64, at: MonoTime) -> bool {
        // Relaxed: published by the Release RMW of the doorbell below, which pairs with
        // the worker's Acquire load of the doorbell.
        self.words.w64(hdr::CYCLE).store(cycle, Ordering::Relaxed);
        // Relaxed: as `cycle`. Never 0 in practice (CLOCK_MONOTONIC counts from boot);
        // 0 is what a worker reads from a host that does not write it.
        self.words
            .w64(hdr::RING_NS)
            .store(at.as_nanos(), Ordering::Relaxed);
        bump_and_wake(
            self.words.w32(hdr::DOORBELL),
            self.words.w32(hdr::WORKER_WAITING),
        )
    }

    /// The worker's `done` counter (untrusted: compare for change only).
    pub fn done_count(&self) -> u32 {
        // Acquire pairs with the Release RMW in `WorkerBell::signal_done` (`bump_and_wake`).
        self.words.w32(hdr::DONE).load(Ordering::Acquire)
    }

    /// Sleeps until `done` differs from `seen` or `deadline` passes. Never waits past
    /// the deadline, whatever the worker writes. RT-safe: the only blocking call the
    /// audio thread makes, bounded by the cycle's deadline.
    pub fn wait_done(&self, seen: u32, deadline: MonoTime) -> WaitOutcome {
        // Loom explores every interleaving of a spin loop: its models keep the spin off
        // (the sleep protocol below is what they check; the spin only loads).
        #[cfg(not(loom))]
        if !self.spin.is_zero()
            && spin_until_changed(
                self.words.w32(hdr::DONE),
                seen,
                MonoTime::now().saturating_add(self.spin).min(deadline),
            )
        {
            return WaitOutcome::Signalled;
        }
        wait_word(
            self.words.w32(hdr::DONE),
            self.words.w32(hdr::HOST_WAITING),
            seen,
            deadline,
        )
    }

    /// Bumps the host heartbeat. RT-safe.
    pub fn beat(&self) {
        // Relaxed: a liveness counter; nothing is published through it.
        self.words
            .w64(hdr::HOST_HEARTBEAT)
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Worker side of the doorbell/done pair, plus the worker's status words.
#[derive(Debug)]
pub struct WorkerBell {
    words: Words,
}

impl WorkerBell {
    pub(crate) fn new(words: Words) -> Self {
        Self { words }
    }

    /// The doorbell counter (compare for change only).
    pub fn doorbell(&self) -> u32 {
        // Acquire pairs with the Release RMW in `HostBell::ring` (`bump_and_wake`).
        self.words.w32(hdr::DOORBELL).load(Ordering::Acquire)
    }

    /// The cycle the host last rang for.
    pub fn cycle(&self) -> u64 {
        // Relaxed: read after the Acquire load of the doorbell it was published with.
        self.words.w64(hdr::CYCLE).load(Ordering::Relaxed)
    }

    /// When the host last rang (its `CLOCK_MONOTONIC`, the same clock as [`MonoTime`]),
    /// `None` if it never did. Read after the doorbell: that ring's time or a later one's.
    pub fn ring_time(&self) -> Option<MonoTime> {
        // Relaxed: as `cycle`.
        match self.words.w64(hdr::RING_NS).load(Ordering::Relaxed) {
            0 => None,
            ns => Some(MonoTime::from_nanos(ns)),
        }
    }

    /// Sleeps until the doorbell differs from `seen` or `deadline` passes (a worker that
    /// cannot rely on idle rings yet, tests, benches).
    pub fn wait_doorbell(&self, seen: u32, deadline: MonoTime) -> WaitOutcome {
        wait_word(
            self.words.w32(hdr::DOORBELL),
            self.words.w32(hdr::WORKER_WAITING),
            seen,
            deadline,
        )
    }

    /// Sleeps until the doorbell differs from `seen`, with no timeout: a plain
    /// `FUTEX_WAIT`, no hrtimer armed, no clock read. The worker's idle wait. It relies on
    /// the host's promise to bump the doorbell at least every slot tick while the worker
    /// runs ([`Monitor::nudge`], docs/ABI.md "Idle rings"), so a worker still wakes to beat,
    /// to watch the host heartbeat and to see its stop flag when no cycle rings it.
    ///
    /// A signal handler installed without `SA_RESTART` ends the wait early
    /// ([`UntimedOutcome::Interrupted`]); with `SA_RESTART` (signal-hook's flags) the kernel
    /// restarts it and the next ring or nudge ends it. Never call this on the audio thread.
    pub fn wait_doorbell_untimed(&self, seen: u32) -> UntimedOutcome {
        wait_word_untimed(
            self.words.w32(hdr::DOORBELL),
            self.words.w32(hdr::WORKER_WAITING),
            seen,
        )
    }

    /// Polls the doorbell until it differs from `seen` (true) or `until` passes (false):
    /// loads, the vDSO clock and the CPU's spin-wait hint only, no syscall and no
    /// announcement of a sleep, so a ring during the poll costs the host no futex wake.
    /// For a worker that woke just before an expected ring (the worker SDK's pre-wake).
    pub fn poll_doorbell(&self, seen: u32, until: MonoTime) -> bool {
        #[cfg(not(loom))]
        {
            spin_until_changed(self.words.w32(hdr::DOORBELL), seen, until)
        }
        // Loom models do not poll (see `HostBell::wait_done`): one look.
        #[cfg(loom)]
        {
            let _ = until;
            self.doorbell() != seen
        }
    }

    /// Bumps `done` and wakes the host only if it sleeps. RT-safe.
    pub fn signal_done(&self) {
        let _ = bump_and_wake(self.words.w32(hdr::DONE), self.words.w32(hdr::HOST_WAITING));
    }

    /// Bumps the worker heartbeat. RT-safe.
    pub fn beat(&self) {
        // Relaxed: a liveness counter; nothing is published through it.
        self.words
            .w64(hdr::WORKER_HEARTBEAT)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The host heartbeat (the worker exits when it stops advancing).
    pub fn host_heartbeat(&self) -> u64 {
        // Relaxed: a liveness counter; only its change matters.
        self.words.w64(hdr::HOST_HEARTBEAT).load(Ordering::Relaxed)
    }

    /// Publishes the worker's state.
    pub fn set_state(&self, s: WorkerState) {
        // Release pairs with the Acquire load in `Monitor::worker_state`: pid and
        // parameters announced before `Running` are visible once `Running` is.
        self.words
            .w32(hdr::STATE)
            .store(s.to_u32(), Ordering::Release);
    }

    /// Publishes the worker's pid (display only: the host never signals it).
    pub fn set_pid(&self, pid: u32) {
        // Relaxed: published by the Release store of the state that follows it.
        self.words.w32(hdr::PID).store(pid, Ordering::Relaxed);
    }

    /// Publishes the time the last process call took.
    pub fn set_process_ns(&self, ns: u64) {
        // Relaxed: a statistic read on its own.
        self.words.w64(hdr::PROCESS_NS).store(ns, Ordering::Relaxed);
    }

    /// Publishes a fault code (then usually `set_state(Faulted)`).
    pub fn set_fault(&self, code: u32) {
        // Relaxed: published by the Release store of the state that follows it.
        self.words
            .w32(hdr::FAULT_CODE)
            .store(code, Ordering::Relaxed);
    }
}

/// Read-only view of a slot's worker words for the supervisor thread, plus the host
/// heartbeat and the idle ring ([`Monitor::nudge`]). Cheap to clone; `Send + Sync`.
/// Every value read is untrusted data.
#[derive(Clone, Debug)]
pub struct Monitor {
    words: Words,
}

impl Monitor {
    pub(crate) fn new(words: Words) -> Self {
        Self { words }
    }

    /// The worker's heartbeat counter (judge it on the host's own clock).
    pub fn worker_heartbeat(&self) -> u64 {
        // Relaxed: a liveness counter; only its change matters.
        self.words
            .w64(hdr::WORKER_HEARTBEAT)
            .load(Ordering::Relaxed)
    }

    /// The worker's state word.
    pub fn worker_state(&self) -> WorkerState {
        // Acquire pairs with the Release store in `WorkerBell::set_state`.
        WorkerState::from_u32(self.words.w32(hdr::STATE).load(Ordering::Acquire))
    }

    /// The pid the worker wrote (display only; never signal it, use the pidfd).
    pub fn worker_pid(&self) -> u32 {
        // Relaxed: display value, ordered by the state's Acquire when it matters.
        self.words.w32(hdr::PID).load(Ordering::Relaxed)
    }

    /// The worker's fault code.
    pub fn fault_code(&self) -> u32 {
        // Relaxed: ordered by the state's Acquire when it matters.
        self.words.w32(hdr::FAULT_CODE).load(Ordering::Relaxed)
    }

    /// The time the worker's last process call took, as it reports it.
    pub fn process_ns(&self) -> u64 {
        // Relaxed: a statistic.
        self.words.w64(hdr::PROCESS_NS).load(Ordering::Relaxed)
    }

    /// The worker's `done` counter.
    pub fn done_count(&self) -> u32 {
        // Relaxed: compared for change only.
        self.words.w32(hdr::DONE).load(Ordering::Relaxed)
    }

    /// The host heartbeat as stored in the region.
    pub fn host_heartbeat(&self) -> u64 {
        // Relaxed: a liveness counter.
        self.words.w64(hdr::HOST_HEARTBEAT).load(Ordering::Relaxed)
    }

    /// Bumps the host heartbeat (the supervisor does it every slot tick, also while the
    /// engine is idle).
    pub fn beat_host(&self) {
        // Relaxed: a liveness counter; its visibility to a worker woken by the next
        // `nudge` comes from that nudge's Release RMW of the doorbell.
        self.words
            .w64(hdr::HOST_HEARTBEAT)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The idle ring (docs/ABI.md "Idle rings"): bumps the doorbell without a cycle and
    /// wakes the worker only if it sleeps — the same `bump_and_wake` as
    /// [`HostBell::ring`], which may run at the same time on the audio thread (both are
    /// RMWs; the doorbell is compared for change only). A worker sleeping in
    /// [`WorkerBell::wait_doorbell_untimed`] wakes, finds no block, beats, looks at the
    /// host heartbeat and its stop flag, and sleeps again.
    ///
    /// Call [`Monitor::beat_host`] first: a worker woken by this nudge then sees that beat
    /// (Release RMW here, Acquire load of the doorbell in the worker's wait). A word the
    /// worker writes (`worker_waiting`) only decides whether a `FUTEX_WAKE` is made, so a
    /// hostile worker can cost the host one syscall per nudge, nothing more.
    pub fn nudge(&self) {
        let _ = bump_and_wake(
            self.words.w32(hdr::DOORBELL),
            self.words.w32(hdr::WORKER_WAITING),
        );
    }
}

/// Tells the audio thread that a slot's worker is gone, so that it stops waiting for
/// it at once instead of at the cycle's deadline. Held by the supervisor, which calls
/// [`Interrupter::interrupt`] when the worker's pidfd says it exited.
#[derive(Clone, Debug)]
pub struct Interrupter {
    words: Words,
    gone: Arc<StdAtomicU32>,
}

impl Interrupter {
    /// Marks the worker gone and wakes the host side if it sleeps in
    /// [`HostBell::wait_done`]: the flag is raised first, then `done` is bumped (a word
    /// the host only compares for change), so a waiter either sees the flag before it
    /// sleeps or is woken by the bump — the same fence pair as every ring. Call it
    /// only once the worker has exited (it no longer writes `done`; if it still did,
    /// the bump would merely cost the host one more look). A futex wake at most.
    pub fn interrupt(&self) {
        // Release pairs with the Acquire load in `HostBell::interrupted`.
        self.gone.fetch_add(1, StdOrdering::Release);
        let _ = bump_and_wake(self.words.w32(hdr::DONE), self.words.w32(hdr::HOST_WAITING));
    }
}
