//! The few Linux calls of the crate, in one place (DESIGN §10: a port touches only this).
//!
//! memfd creation and sealing, fstat, CLOCK_MONOTONIC, shared futexes.
//!
//! Futex protocol (both directions, docs/ABI.md "Wake-ups"): the waiter stores its
//! `*_waiting` flag = 1, issues a SeqCst fence, re-loads the futex word and only
//! sleeps (`FUTEX_WAIT_BITSET`, which itself re-checks the word in the kernel) if it
//! still holds the value it saw; the waker bumps the word, issues a SeqCst fence and
//! loads the peer's `*_waiting` flag, calling `FUTEX_WAKE` only if it is set. The two
//! fences are totally ordered, so at least one side sees the other's write: either the
//! waiter sees the new word and does not sleep, or the waker sees the flag and wakes
//! it. No wake-up is lost and no syscall is made when the peer is running. The code is
//! `bell::wait_word` / `bell::bump_and_wake`; `tests/loom.rs` model-checks it. The
//! worker's idle wait on the doorbell takes no timeout at all (`futex_wait`): the host
//! bounds it by ringing the doorbell while idle (docs/ABI.md "Idle rings").

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::sync::AtomicU32;

/// The seals every slot region carries.
pub(crate) fn required_seals() -> SealFlag {
    SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL
}

/// A sealable, close-on-exec memfd of `len` bytes, sealed against grow, shrink and
/// further sealing. Nothing appears in /dev/shm.
pub(crate) fn sealed_memfd(name: &str, len: usize) -> Result<OwnedFd, (&'static str, Errno)> {
    // The memfd name is only shown in /proc/PID/fd; it must not contain NUL.
    let mut label = String::from("slotpool:");
    label.extend(name.chars().filter(|&c| c != '\0'));
    let fd = memfd_create(
        label.as_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|e| ("memfd_create", e))?;
    let len = libc::off_t::try_from(len).map_err(|_| ("ftruncate", Errno::EFBIG))?;
    nix::unistd::ftruncate(&fd, len).map_err(|e| ("ftruncate", e))?;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(required_seals())).map_err(|e| ("fcntl(F_ADD_SEALS)", e))?;
    Ok(fd)
}

/// The seals currently on `fd`.
pub(crate) fn seals(fd: impl AsFd) -> Result<SealFlag, Errno> {
    fcntl(fd, FcntlArg::F_GET_SEALS).map(SealFlag::from_bits_truncate)
}

/// The size of the file behind `fd`.
pub(crate) fn file_size(fd: impl AsFd) -> Result<u64, Errno> {
    let st = nix::sys::stat::fstat(fd)?;
    u64::try_from(st.st_size).map_err(|_| Errno::EOVERFLOW)
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO: no syscall, RT-safe).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux,
    // so the call cannot fail (checked in debug builds).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// How a futex wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FutexWait {
    /// Woken (perhaps spuriously), or the word no longer held the expected value.
    Returned,
    /// The absolute deadline passed.
    TimedOut,
    /// A signal handler ran and the kernel did not restart the wait (EINTR).
    Interrupted,
}

/// Maps the result of a futex wait syscall.
#[cfg(not(loom))]
fn wait_result(rc: libc::c_long) -> FutexWait {
    if rc != -1 {
        return FutexWait::Returned;
    }
    match Errno::last() {
        Errno::ETIMEDOUT => FutexWait::TimedOut,
        Errno::EINTR => FutexWait::Interrupted,
        // EAGAIN: the word no longer held the expected value; the caller re-checks.
        _ => FutexWait::Returned,
    }
}

/// `FUTEX_WAIT_BITSET` on a shared (non-private) futex word until the absolute
/// CLOCK_MONOTONIC `deadline_ns`, if `*word == expected` at the time of the call.
/// May return spuriously; callers loop and re-check their condition and the deadline.
#[cfg(not(loom))]
pub(crate) fn futex_wait_until(word: &AtomicU32, expected: u32, deadline_ns: u64) -> FutexWait {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    #[cfg(rtsan)]
    let _exempt = rtsan::FutexExemption::enter();
    // SAFETY: `word` points to a live, 4-byte-aligned u32 (an AtomicU32) for the whole
    // call; `ts` is a valid timespec read by the kernel only. FUTEX_WAIT_BITSET without
    // FUTEX_CLOCK_REALTIME takes an absolute CLOCK_MONOTONIC timeout; no FUTEX_PRIVATE_FLAG
    // because the word lives in memory shared with another process. The kernel only
    // reads the word.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    wait_result(rc)
}

/// `FUTEX_WAIT` on a shared (non-private) futex word without a timeout, if
/// `*word == expected` at the time of the call: no hrtimer is armed, which is what makes
/// it cheaper than [`futex_wait_until`]. Sleeps until a `FUTEX_WAKE` on the word, a
/// spurious wake-up, or a signal whose handler was installed without `SA_RESTART`
/// ([`FutexWait::Interrupted`]); with `SA_RESTART` (signal-hook's default) the kernel
/// restarts the wait after the handler, so only a wake ends it. Never used on the audio
/// thread: it is not bounded, so it is not exempt from RTSan either.
#[cfg(not(loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) -> FutexWait {
    // SAFETY: `word` points to a live, 4-byte-aligned u32 (an AtomicU32) for the whole
    // call; a null timeout means none. No FUTEX_PRIVATE_FLAG because the word lives in
    // memory shared with another process. The kernel only reads the word.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
    wait_result(rc)
}

/// `FUTEX_WAKE` of every waiter on a shared futex word.
#[cfg(not(loom))]
pub(crate) fn futex_wake(word: &AtomicU32) {
    #[cfg(rtsan)]
    let _exempt = rtsan::FutexExemption::enter();
    // SAFETY: `word` points to a live, aligned u32 for the call; FUTEX_WAKE does not
    // touch memory, it only wakes waiters queued on this address (shared futex key:
    // the memfd page, so waiters in other processes are found).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

/// RealtimeSanitizer builds (`--cfg rtsan` with `-Zsanitizer=realtime`, see
/// scripts/rtsan.sh): RTSan flags every `syscall` made in a function marked
/// nonblocking, but the futex calls above are the two the design allows on the audio
/// thread (STYLE.md "Real time"): a `FUTEX_WAKE` never sleeps, and the
/// `FUTEX_WAIT_BITSET` is bounded by an absolute deadline. Exactly these two calls
/// run with RTSan's checks off; everything around them stays checked.
#[cfg(rtsan)]
pub mod rtsan {
    use std::sync::atomic::{AtomicBool, Ordering};

    unsafe extern "C" {
        // The RTSan runtime's public interface (compiler-rt sanitizer/rtsan_interface.h):
        // a per-thread counter that suspends the checks while above zero.
        fn __rtsan_disable();
        fn __rtsan_enable();
    }

    /// Set by the sanitizer's negative-control test: the futex calls are checked too,
    /// so RTSan must abort in the engine's cycle (proof that the cycle is checked).
    static STRICT: AtomicBool = AtomicBool::new(false);

    /// Turns the futex exemption off (`true`) or on again, for this process.
    pub fn strict_futex(on: bool) {
        // Relaxed: a test switch set before the cycle under test runs on this thread.
        STRICT.store(on, Ordering::Relaxed);
    }

    /// Checks off while alive (unless strict).
    pub(crate) struct FutexExemption(bool);

    impl FutexExemption {
        pub(crate) fn enter() -> Self {
            // Relaxed: see `strict_futex`.
            let active = !STRICT.load(Ordering::Relaxed);
            if active {
                // SAFETY: the runtime is linked into every `-Zsanitizer=realtime` build
                // (the only builds with `--cfg rtsan`); the call only bumps a
                // thread-local counter, undone in `drop`.
                unsafe { __rtsan_disable() };
            }
            Self(active)
        }
    }

    impl Drop for FutexExemption {
        fn drop(&mut self) {
            if self.0 {
                // SAFETY: pairs with the `__rtsan_disable` of `enter` on this thread.
                unsafe { __rtsan_enable() };
            }
        }
    }
}

#[cfg(loom)]
loom::lazy_static! {
    /// Loom's stand-in for the kernel's futex hash bucket: one lock and one condition
    /// variable for every word (reset by loom for each explored execution).
    static ref FUTEX: (loom::sync::Mutex<()>, loom::sync::Condvar) =
        (loom::sync::Mutex::new(()), loom::sync::Condvar::new());
}

/// Loom build: the futex as the kernel defines it, minus timeouts. The value check
/// and the sleep are atomic with respect to wakes (both under the bucket lock), so a
/// lost wake-up in the waiting-flag protocol shows up as a loom deadlock. Deadlines are
/// not modelled: loom models pass a far-future deadline.
#[cfg(loom)]
pub(crate) fn futex_wait_until(word: &AtomicU32, expected: u32, _deadline_ns: u64) -> FutexWait {
    let (lock, cv) = &*FUTEX;
    let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    // SeqCst: the kernel's read of the word is a full barrier.
    if word.load(crate::sync::Ordering::SeqCst) != expected {
        return FutexWait::Returned;
    }
    drop(cv.wait(guard).unwrap_or_else(|e| e.into_inner()));
    FutexWait::Returned
}

/// Loom build: [`futex_wait_until`] without a deadline (the same model: loom explores no
/// timeouts and no signals).
#[cfg(loom)]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) -> FutexWait {
    futex_wait_until(word, expected, u64::MAX)
}

/// Loom build: wakes every waiter (see `futex_wait_until`).
#[cfg(loom)]
pub(crate) fn futex_wake(_word: &AtomicU32) {
    let (lock, cv) = &*FUTEX;
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    cv.notify_all();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn futex_wait_times_out_at_absolute_deadline() {
        let w = AtomicU32::new(7);
        let deadline = monotonic_ns() + 20_000_000;
        let mut out = FutexWait::Returned;
        while monotonic_ns() < deadline && out == FutexWait::Returned {
            out = futex_wait_until(&w, 7, deadline);
        }
        assert!(monotonic_ns() >= deadline);
    }

    #[test]
    fn futex_wait_returns_when_value_differs() {
        let w = AtomicU32::new(7);
        let deadline = monotonic_ns() + 60_000_000_000;
        assert_eq!(futex_wait_until(&w, 8, deadline), FutexWait::Returned);
    }

    #[test]
    fn untimed_futex_wait_returns_when_value_differs_or_when_woken() {
        let w = std::sync::Arc::new(AtomicU32::new(7));
        assert_eq!(futex_wait(&w, 8), FutexWait::Returned);
        let waker = {
            let w = w.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                w.store(8, std::sync::atomic::Ordering::SeqCst);
                futex_wake(&w);
            })
        };
        // A spurious return re-checks, as every caller does.
        while w.load(std::sync::atomic::Ordering::SeqCst) == 7 {
            assert_ne!(futex_wait(&w, 7), FutexWait::TimedOut);
        }
        waker.join().unwrap();
    }

    #[test]
    fn memfd_is_sealed() {
        let fd = sealed_memfd("t:0", 8192).unwrap();
        assert!(seals(&fd).unwrap().contains(required_seals()));
        assert_eq!(file_size(&fd).unwrap(), 8192);
        assert!(nix::unistd::ftruncate(&fd, 4096).is_err());
    }
}
