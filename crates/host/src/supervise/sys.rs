//! The host's few process syscalls that have no safe wrapper: pidfd_open,
//! pidfd_send_signal, close_range, sched_setscheduler, and the fd reservation that
//! keeps fd 3 and 4 free for handing over. Everything else goes through `nix`'s safe
//! wrappers.
//!
//! Functions marked "async-signal-safe" may run in a forked child before exec: they
//! make one raw syscall each and never allocate or lock.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::resource::{Resource, setrlimit};

use super::sched::RtStep;

/// The fd number a slot's region is handed over as (`SLOTPOOL_REGION_FD`).
pub const REGION_FD: RawFd = 3;
/// The fd number of the optional ready pipe (`SLOTPOOL_READY_FD`).
pub const READY_FD: RawFd = 4;
/// The fd number of a standby's go pipe (`SLOTPOOL_GO_FD`).
pub const GO_FD: RawFd = 5;

/// Opens a pidfd for our own unreaped child `pid`. The pid cannot have been reused:
/// an unreaped child keeps its pid, and only this thread's waitid reaps.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1;
    // no memory is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it. The fd is
    // close-on-exec (pidfds always are).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` to the process `pidfd` refers to. Fails with ESRCH once it has exited.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: the fd is borrowed and valid for the call; info is NULL (the kernel fills
    // in a default siginfo) and flags are 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Marks every fd from `first` up close-on-exec (CLOSE_RANGE_CLOEXEC, Linux 5.11+), so
/// the exec leaves the child exactly the fds below `first`. Async-signal-safe.
///
/// Close-on-exec rather than closed: std's spawner reports exec errors (ENOENT,
/// EACCES) through a close-on-exec pipe, which must stay open until the exec.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range takes three integers; with CLOSE_RANGE_CLOEXEC it only sets
    // flags and invalidates no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Older kernels: set the flag fd by fd, up to a fixed bound (no allocation here).
    for fd in first..4096 {
        // SAFETY: fcntl on an fd number that may not be open fails with EBADF; it
        // touches no memory.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// `dup2(from, to)` and make sure `to` survives exec (dup2 onto the same number keeps
/// the close-on-exec flag, so clear it explicitly). Async-signal-safe.
pub fn hand_over(from: RawFd, to: RawFd) -> io::Result<()> {
    if from != to {
        // SAFETY: dup2 on two fd numbers; `from` is open (the caller keeps it alive across
        // the fork), `to` is one of the numbers the host keeps reserved.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: F_SETFD with 0 clears FD_CLOEXEC on an open fd; no memory involved.
    if unsafe { libc::fcntl(to, libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `data` to `fd` with one write(2). Async-signal-safe.
pub fn write_raw(fd: RawFd, data: &[u8]) -> io::Result<()> {
    // SAFETY: `data` is a valid slice for the duration of the call.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Occupies fds 3, 4 and 5 (with /dev/null, close-on-exec) when they are free, so that no
/// pipe or socket of the host ever gets those numbers: the spawner dup2()s handed-over
/// fds onto them in the child, and must never clobber one of std's own fds there (its
/// exec-error pipe). Call once at start-up, before any other thread opens files.
pub fn reserve_handover_fds() -> io::Result<()> {
    for target in [REGION_FD, READY_FD, GO_FD] {
        // SAFETY: F_GETFD only queries flags of an fd number.
        let flags = unsafe { libc::fcntl(target, libc::F_GETFD) };
        if flags >= 0 {
            // Inherited from whoever started us: keep the number taken, but never pass it on.
            // SAFETY: as above, sets a flag on an open fd.
            unsafe { libc::fcntl(target, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
            continue;
        }
        let null = std::fs::File::open("/dev/null")?;
        if null.as_raw_fd() == target {
            // It got the number itself: keep it open for good (that is the reservation).
            let _reserved: RawFd = std::os::fd::IntoRawFd::into_raw_fd(null);
            continue;
        }
        // SAFETY: dup3 onto a free fd number; the new fd is owned by nobody but stays
        // open for the host's lifetime on purpose (it is the reservation).
        if unsafe { libc::dup3(null.as_raw_fd(), target, libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// In a forked child before exec: an empty signal mask and the default disposition for
/// every standard signal. Exec keeps both the mask and ignored signals, and the host
/// blocks SIGTERM/SIGINT/SIGHUP (it reads them from a signalfd) and may itself have been
/// started with SIGINT ignored (a shell's background job): a child must still die of its
/// `stopsignal`. Async-signal-safe.
pub fn reset_signals() -> io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    for sig in 1..32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: signal(2) with SIG_DFL installs no handler (no code of ours can run on
        // delivery); it is async-signal-safe and touches no memory of ours.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    Ok(())
}

/// In a forked child before exec: RLIMIT_RTTIME to `soft_us`/`hard_us` first (so the
/// process is never real-time without the kernel's bound), then SCHED_FIFO at
/// `priority` with SCHED_RESET_ON_FORK (children and threads it creates start at normal
/// priority). Both survive the exec. On failure, says which step and why; nothing
/// after a failed step is attempted. Async-signal-safe: two syscalls, no allocation.
pub fn enter_realtime(priority: u8, soft_us: u64, hard_us: u64) -> Result<(), (RtStep, Errno)> {
    setrlimit(Resource::RLIMIT_RTTIME, soft_us, hard_us).map_err(|e| (RtStep::Rlimit, e))?;
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the call; pid 0
    // is the calling (only) thread of the forked child. The call reads `param` only.
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    Errno::result(rc)
        .map(drop)
        .map_err(|e| (RtStep::Scheduler, e))
}
