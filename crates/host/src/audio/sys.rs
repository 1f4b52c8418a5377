//! The audio backends' two scheduler syscalls nix does not wrap. The only unsafe code in
//! `audio/`.

use nix::errno::Errno;

/// Switches the calling thread to SCHED_FIFO at `priority` (1..=99).
pub(super) fn set_fifo_current_thread(priority: u8) -> Result<(), Errno> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` is a valid, initialised sched_param that outlives the call; pid 0
    // names the calling thread (Linux schedules threads, not processes), so no other
    // thread's state is touched. The call reads `param` and writes nothing of ours.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    Errno::result(rc).map(drop)
}

/// The calling thread's scheduling policy and priority (`SCHED_OTHER` is `(0, 0)`).
pub(super) fn current_policy() -> Result<(i32, i32), Errno> {
    // SAFETY: pid 0 is the calling thread; the call takes no pointers.
    let policy = Errno::result(unsafe { libc::sched_getscheduler(0) })?;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid, writable sched_param for the duration of the call;
    // pid 0 is the calling thread.
    Errno::result(unsafe { libc::sched_getparam(0, &mut param) })?;
    Ok((policy, param.sched_priority))
}
