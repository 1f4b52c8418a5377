//! Real-time scheduling of slot workers (`[engine] worker_realtime`).
//!
//! A slot worker serves the audio thread: the audio thread rings its doorbell and waits
//! for its block until the cycle's deadline. At normal priority any busy process on the
//! box (a compiler, a browser) can hold the worker off the CPU past that deadline, so
//! the spawner puts slot workers into SCHED_FIFO one below the audio thread (the audio
//! thread always preempts its workers; everything at normal priority yields to them).
//!
//! Three guards come with it, all set in the child between fork and exec:
//! - `SCHED_RESET_ON_FORK`: whatever the worker starts (threads, helper processes) runs
//!   at normal priority; only the worker's own process loop is real-time.
//! - `RLIMIT_RTTIME` (see [`rttime_limits`]): a worker that runs at real-time priority
//!   without blocking for longer than any working worker ever does is stopped by the
//!   kernel, SIGXCPU at the soft limit and SIGKILL at the hard one. That bounds what a
//!   spinning worker takes from the host before the hang watchdog even looks.
//! - A refusal (EPERM: not root, no CAP_SYS_NICE, no `rtprio` limit) never fails the
//!   start: the worker runs at normal priority and status says why.
//!
//! Plain (non-slot) programs are never touched.

use std::fmt;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit};

use crate::audio::RtState;
use crate::config::WorkerRealtime;

/// The least CPU time a real-time worker may run without blocking before SIGXCPU.
pub const RTTIME_SOFT_MIN: Duration = Duration::from_millis(200);

/// What the spawner applies to one slot worker before exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtRequest {
    /// SCHED_FIFO priority (1..=99), with SCHED_RESET_ON_FORK.
    pub priority: u8,
    /// RLIMIT_RTTIME soft limit in microseconds (SIGXCPU).
    pub rttime_soft_us: u64,
    /// RLIMIT_RTTIME hard limit in microseconds (SIGKILL).
    pub rttime_hard_us: u64,
}

/// Which call in the child refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtStep {
    /// setrlimit(RLIMIT_RTTIME): without it, SCHED_FIFO is not asked for.
    Rlimit,
    /// sched_setscheduler(SCHED_FIFO | SCHED_RESET_ON_FORK).
    Scheduler,
    /// The host could not make the pipe the child reports through (out of fds), so it
    /// did not ask for real-time at all.
    Report,
}

impl RtStep {
    /// The byte the child writes to report this step.
    pub(crate) fn code(self) -> u8 {
        match self {
            RtStep::Rlimit => 1,
            RtStep::Scheduler => 2,
            RtStep::Report => 3,
        }
    }

    /// The inverse of [`RtStep::code`].
    pub(crate) fn from_code(code: u8) -> Option<RtStep> {
        match code {
            1 => Some(RtStep::Rlimit),
            2 => Some(RtStep::Scheduler),
            3 => Some(RtStep::Report),
            _ => None,
        }
    }
}

/// How one slot worker was scheduled when it was spawned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerRt {
    /// Normal scheduling: `worker_realtime = false`.
    Off,
    /// Normal scheduling: the audio thread has no real-time priority to stay below.
    AudioNotRealtime,
    /// SCHED_FIFO at `priority`, bounded by RLIMIT_RTTIME.
    Applied(RtRequest),
    /// Asked for and refused by the kernel: the worker runs at normal priority.
    Refused {
        /// What was asked for.
        request: RtRequest,
        /// The call that failed.
        step: RtStep,
        /// Its errno.
        errno: Errno,
    },
}

impl WorkerRt {
    /// Whether the worker runs real-time.
    pub fn is_applied(&self) -> bool {
        matches!(self, WorkerRt::Applied(_))
    }

    /// The one-line form for `status`' description column; `None` when nothing is
    /// wrong (real-time as configured, or off by choice).
    pub fn problem(&self) -> Option<String> {
        match *self {
            WorkerRt::Refused {
                request,
                step,
                errno,
            } => Some(match step {
                RtStep::Scheduler => format!(
                    "normal priority: SCHED_FIFO {} refused ({})",
                    request.priority,
                    errno_name(errno)
                ),
                RtStep::Rlimit => format!(
                    "normal priority: RLIMIT_RTTIME refused ({})",
                    errno_name(errno)
                ),
                RtStep::Report => {
                    format!("normal priority: no report pipe ({})", errno_name(errno))
                }
            }),
            _ => None,
        }
    }
}

fn ms(us: u64) -> u64 {
    us / 1000
}

fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

impl fmt::Display for WorkerRt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WorkerRt::Off => f.write_str(
                "off (realtime = false for this slot, or [engine] worker_realtime = false)",
            ),
            WorkerRt::AudioNotRealtime => {
                f.write_str("off (the audio thread is not real-time; see the host's realtime)")
            }
            WorkerRt::Applied(r) => write!(
                f,
                "SCHED_FIFO {}, RLIMIT_RTTIME {}/{} ms",
                r.priority,
                ms(r.rttime_soft_us),
                ms(r.rttime_hard_us)
            ),
            WorkerRt::Refused {
                request,
                step: RtStep::Scheduler,
                errno,
            } => {
                write!(
                    f,
                    "off: SCHED_FIFO {} refused: {}",
                    request.priority,
                    errno.desc()
                )?;
                if errno == Errno::EPERM {
                    write!(
                        f,
                        " (needs CAP_SYS_NICE or an rtprio limit of at least {}: \
                         `@audio - rtprio 95` in /etc/security/limits.d/ and membership of `audio`)",
                        request.priority
                    )?;
                }
                f.write_str("; running at normal priority")
            }
            WorkerRt::Refused {
                request,
                step: RtStep::Rlimit,
                errno,
            } => write!(
                f,
                "off: setting RLIMIT_RTTIME to {}/{} ms failed: {}; SCHED_FIFO {} not asked for \
                 without it; running at normal priority",
                ms(request.rttime_soft_us),
                ms(request.rttime_hard_us),
                errno.desc(),
                request.priority
            ),
            WorkerRt::Refused {
                request,
                step: RtStep::Report,
                errno,
            } => write!(
                f,
                "off: SCHED_FIFO {} not asked for: the host could not make the pipe the \
                 worker reports its scheduling through: {}; running at normal priority",
                request.priority,
                errno.desc()
            ),
        }
    }
}

/// The audio thread's real-time priority, if it has one: what it got (or, before it
/// has run, what it asked for), or what the audio server (JACK) gave it.
pub fn audio_priority(audio: RtState) -> Option<u8> {
    match audio {
        RtState::Applied { priority } | RtState::Pending { priority } => Some(priority),
        RtState::Server { policy, priority }
            if (policy == libc::SCHED_FIFO || policy == libc::SCHED_RR) && priority > 0 =>
        {
            Some(priority)
        }
        RtState::Server { .. } | RtState::NotRequested | RtState::Refused { .. } => None,
    }
}

/// RLIMIT_RTTIME for a worker whose block period is `period`, as (soft, hard) in
/// microseconds, clamped to the host's own hard limit (an unprivileged process may not
/// raise it).
///
/// A working worker blocks on its doorbell once per period: its CPU time between two
/// blocking calls stays below one period (a block that takes longer is late anyway).
/// The soft limit is the larger of 200 ms and two periods: 37 periods at 256 frames /
/// 48 kHz, a margin no scheduling hiccup reaches, and still short enough that a
/// spinning worker holds a core for at most a fifth of a second. The hard limit is twice
/// the soft one: SIGKILL for a worker that catches or ignores SIGXCPU. The kernel counts
/// in scheduler ticks (1–10 ms), far below either.
pub fn rttime_limits(period: Duration, host_hard_us: Option<u64>) -> (u64, u64) {
    let soft = RTTIME_SOFT_MIN.max(period * 2);
    let soft_us = u64::try_from(soft.as_micros()).unwrap_or(u64::MAX);
    let hard_us = soft_us.saturating_mul(2);
    match host_hard_us {
        Some(cap) => (soft_us.min(cap), hard_us.min(cap)),
        None => (soft_us, hard_us),
    }
}

/// The host's own RLIMIT_RTTIME hard limit, `None` when unlimited (or unreadable).
pub fn host_rttime_hard() -> Option<u64> {
    match getrlimit(Resource::RLIMIT_RTTIME) {
        Ok((_, hard)) if hard != libc::RLIM_INFINITY => Some(hard),
        _ => None,
    }
}

/// What to ask for a slot worker: `Ok` with the request, or `Err` with the reason it
/// runs at normal priority by design.
pub fn plan(
    setting: WorkerRealtime,
    audio: RtState,
    period: Duration,
    host_hard_us: Option<u64>,
) -> Result<RtRequest, WorkerRt> {
    let priority = match setting {
        WorkerRealtime::Off => return Err(WorkerRt::Off),
        WorkerRealtime::Priority(p) => p,
        // SCHED_FIFO has no priority below 1: an audio thread at 1 shares it.
        WorkerRealtime::BelowAudio => match audio_priority(audio) {
            Some(p) => p.saturating_sub(1).max(1),
            None => return Err(WorkerRt::AudioNotRealtime),
        },
    };
    let (rttime_soft_us, rttime_hard_us) = rttime_limits(period, host_hard_us);
    Ok(RtRequest {
        priority,
        rttime_soft_us,
        rttime_hard_us,
    })
}

/// What a spawn with `plan` ended in, given the child's report (`refused`).
pub fn outcome(plan: Result<RtRequest, WorkerRt>, refused: Option<(RtStep, Errno)>) -> WorkerRt {
    match (plan, refused) {
        (Err(why), _) => why,
        (Ok(request), None) => WorkerRt::Applied(request),
        (Ok(request), Some((step, errno))) => WorkerRt::Refused {
            request,
            step,
            errno,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_micros(5333);

    #[test]
    fn workers_follow_one_below_the_audio_thread_it_actually_got() {
        let p = |audio| plan(WorkerRealtime::BelowAudio, audio, PERIOD, None).map(|r| r.priority);
        assert_eq!(p(RtState::Applied { priority: 70 }), Ok(69));
        assert_eq!(p(RtState::Pending { priority: 80 }), Ok(79));
        // JACK's process thread: the server's choice, not `realtime`.
        assert_eq!(
            p(RtState::Server {
                policy: libc::SCHED_FIFO,
                priority: 5
            }),
            Ok(4)
        );
        assert_eq!(p(RtState::Applied { priority: 1 }), Ok(1));
        for audio in [
            RtState::NotRequested,
            RtState::Refused {
                priority: 70,
                errno: Errno::EPERM,
            },
            RtState::Server {
                policy: libc::SCHED_OTHER,
                priority: 0,
            },
        ] {
            assert_eq!(p(audio), Err(WorkerRt::AudioNotRealtime), "{audio:?}");
        }
    }

    #[test]
    fn an_explicit_priority_or_false_ignores_the_audio_thread() {
        let audio = RtState::NotRequested;
        assert_eq!(
            plan(WorkerRealtime::Priority(40), audio, PERIOD, None).map(|r| r.priority),
            Ok(40)
        );
        assert_eq!(
            plan(
                WorkerRealtime::Off,
                RtState::Applied { priority: 70 },
                PERIOD,
                None
            ),
            Err(WorkerRt::Off)
        );
    }

    #[test]
    fn rttime_is_200_ms_soft_400_hard_or_two_periods_and_respects_the_host_cap() {
        assert_eq!(rttime_limits(PERIOD, None), (200_000, 400_000));
        // 8192 frames at 8 kHz: a 1.024 s period.
        let long = Duration::from_micros(1_024_000);
        assert_eq!(rttime_limits(long, None), (2_048_000, 4_096_000));
        assert_eq!(rttime_limits(PERIOD, Some(300_000)), (200_000, 300_000));
    }

    #[test]
    fn refusals_say_what_and_why_and_never_claim_real_time() {
        let request = plan(
            WorkerRealtime::BelowAudio,
            RtState::Applied { priority: 70 },
            PERIOD,
            None,
        )
        .unwrap();
        let applied = outcome(Ok(request), None);
        assert!(applied.is_applied());
        assert_eq!(
            applied.to_string(),
            "SCHED_FIFO 69, RLIMIT_RTTIME 200/400 ms"
        );
        assert_eq!(applied.problem(), None);
        let refused = outcome(Ok(request), Some((RtStep::Scheduler, Errno::EPERM)));
        assert!(!refused.is_applied());
        let text = refused.to_string();
        assert!(text.starts_with("off: SCHED_FIFO 69 refused"), "{text}");
        assert!(
            text.contains("rtprio") && text.contains("normal priority"),
            "{text}"
        );
        assert_eq!(
            refused.problem().unwrap(),
            "normal priority: SCHED_FIFO 69 refused (EPERM)"
        );
        let rl = outcome(Ok(request), Some((RtStep::Rlimit, Errno::EPERM)));
        assert!(rl.to_string().contains("RLIMIT_RTTIME"), "{rl}");
        assert_eq!(outcome(Err(WorkerRt::Off), None), WorkerRt::Off);
        for step in [RtStep::Rlimit, RtStep::Scheduler, RtStep::Report] {
            assert_eq!(RtStep::from_code(step.code()), Some(step));
        }
        assert_eq!(RtStep::from_code(0), None);
    }
}
