//! SCHED_FIFO for the audio thread: asked for with `[engine] realtime = true | PRIORITY`,
//! applied when the system permits (CAP_SYS_NICE, or an `rtprio` limit at least that
//! high), and otherwise recorded as refused, with the reason, for `status`.

use std::fmt;

use nix::errno::Errno;

use super::sys;

/// Whether the audio thread runs real-time, and why not. `Copy` so the audio thread can
/// store it without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtState {
    /// `realtime` is off in the config.
    NotRequested,
    /// Asked for; the audio thread has not run yet.
    Pending {
        /// The requested priority.
        priority: u8,
    },
    /// The audio thread runs SCHED_FIFO at `priority`.
    Applied {
        /// The priority in force.
        priority: u8,
    },
    /// The kernel refused.
    Refused {
        /// The requested priority.
        priority: u8,
        /// The errno `sched_setscheduler` returned.
        errno: Errno,
    },
    /// The audio server owns the thread's scheduling (JACK's process thread); this is
    /// what it runs at.
    Server {
        /// The thread's policy (`libc::SCHED_*`).
        policy: i32,
        /// Its priority.
        priority: u8,
    },
}

impl RtState {
    /// Packs into a u64 for an atomic: tag in the low byte, priority in the next, errno
    /// or policy above.
    pub(crate) fn encode(self) -> u64 {
        let (tag, prio, extra) = match self {
            RtState::NotRequested => (0u64, 0u8, 0i32),
            RtState::Pending { priority } => (1, priority, 0),
            RtState::Applied { priority } => (2, priority, 0),
            RtState::Refused { priority, errno } => (3, priority, errno as i32),
            RtState::Server { policy, priority } => (4, priority, policy),
        };
        tag | (u64::from(prio) << 8) | (u64::from(extra as u32) << 16)
    }

    /// The inverse of [`RtState::encode`].
    pub(crate) fn decode(v: u64) -> RtState {
        let priority = (v >> 8) as u8;
        let extra = (v >> 16) as u32 as i32;
        match v & 0xff {
            1 => RtState::Pending { priority },
            2 => RtState::Applied { priority },
            3 => RtState::Refused {
                priority,
                errno: Errno::from_raw(extra),
            },
            4 => RtState::Server {
                policy: extra,
                priority,
            },
            _ => RtState::NotRequested,
        }
    }

    /// What `realtime = …` asks for before the audio thread runs.
    pub fn requested(priority: Option<u8>) -> RtState {
        match priority {
            Some(priority) => RtState::Pending { priority },
            None => RtState::NotRequested,
        }
    }
}

impl fmt::Display for RtState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RtState::NotRequested => f.write_str("off (realtime = false)"),
            RtState::Pending { priority } => {
                write!(f, "SCHED_FIFO {priority} requested, not yet applied")
            }
            RtState::Applied { priority } => write!(f, "SCHED_FIFO {priority}"),
            RtState::Refused { priority, errno } => {
                write!(f, "SCHED_FIFO {priority} refused: {}", errno.desc())?;
                if errno == Errno::EPERM {
                    write!(
                        f,
                        " (needs CAP_SYS_NICE or an rtprio limit of at least {priority}: \
                         `@audio - rtprio 95` in /etc/security/limits.d/ and membership of `audio`)"
                    )?;
                }
                Ok(())
            }
            RtState::Server { policy, priority } => {
                let name = match policy {
                    libc::SCHED_FIFO => "SCHED_FIFO",
                    libc::SCHED_RR => "SCHED_RR",
                    libc::SCHED_OTHER => "SCHED_OTHER",
                    _ => "another policy",
                };
                write!(f, "set by the audio server: {name} {priority}")
            }
        }
    }
}

/// Asks for SCHED_FIFO `priority` on the calling thread and says what happened. One
/// syscall, no allocation: callable from the first audio callback.
pub fn promote_current_thread(priority: u8) -> RtState {
    match sys::set_fifo_current_thread(priority) {
        Ok(()) => RtState::Applied { priority },
        Err(errno) => RtState::Refused { priority, errno },
    }
}

/// The calling thread's scheduling as a [`RtState::Server`] (for threads another
/// component schedules, like JACK's process thread).
pub fn current_thread_as_server() -> RtState {
    match sys::current_policy() {
        Ok((policy, priority)) => RtState::Server {
            policy,
            priority: u8::try_from(priority).unwrap_or(0),
        },
        Err(_) => RtState::Server {
            policy: -1,
            priority: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_survive_the_atomic_encoding() {
        for s in [
            RtState::NotRequested,
            RtState::Pending { priority: 70 },
            RtState::Applied { priority: 99 },
            RtState::Refused {
                priority: 1,
                errno: Errno::EPERM,
            },
            RtState::Server {
                policy: libc::SCHED_FIFO,
                priority: 10,
            },
        ] {
            assert_eq!(RtState::decode(s.encode()), s);
        }
    }

    #[test]
    fn promotion_is_applied_or_refused_with_the_reason() {
        // Runs on a scratch thread so the test harness's threads keep their policy.
        let (state, policy) = std::thread::spawn(|| {
            let s = promote_current_thread(10);
            (s, sys::current_policy().expect("sched_getscheduler"))
        })
        .join()
        .expect("thread");
        match state {
            RtState::Applied { priority } => {
                assert_eq!(priority, 10);
                assert_eq!(policy, (libc::SCHED_FIFO, 10));
            }
            RtState::Refused { errno, .. } => {
                assert_ne!(policy.0, libc::SCHED_FIFO);
                assert!(matches!(errno, Errno::EPERM | Errno::EINVAL), "{errno}");
                assert!(state.to_string().contains("refused"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
