//! The worker's process-level calls: the start-up environment, the parent-death signal,
//! taking inherited fds, signal flags. All safe code (nix, signal-hook, std).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use nix::sys::signal::Signal;

/// Environment variable: the region fd number.
pub const ENV_REGION_FD: &str = "SLOTPOOL_REGION_FD";
/// Environment variable: the slot name.
pub const ENV_SLOT: &str = "SLOTPOOL_SLOT";
/// Environment variable: the readiness pipe fd number (optional).
pub const ENV_READY_FD: &str = "SLOTPOOL_READY_FD";
/// Environment variable: the standby "go" pipe fd number. A worker given one starts as
/// a standby: it waits for one byte on it before it touches the region.
pub const ENV_GO_FD: &str = "SLOTPOOL_GO_FD";
/// Environment variable: a standby's region fd number, given *instead of*
/// `SLOTPOOL_REGION_FD`, so that a worker that does not know standbys refuses to start
/// (exit 2) rather than use a region another worker still owns.
pub const ENV_STANDBY_REGION_FD: &str = "SLOTPOOL_STANDBY_REGION_FD";
/// Environment variable: the host's pid (optional).
pub const ENV_PARENT_PID: &str = "SLOTPOOL_PARENT_PID";
/// Environment variable: the sample rate in Hz (optional, default 48000).
pub const ENV_SAMPLE_RATE: &str = "SLOTPOOL_SAMPLE_RATE";
/// Optional: the pre-wake window in microseconds (absent or 0: off; see `prewake`).
pub const ENV_PREWAKE_US: &str = "SLOTPOOL_PREWAKE_US";
/// Largest pre-wake window the worker accepts; the host's config uses the same bound.
pub const MAX_PREWAKE_US: u32 = 10_000;
// The refusal below spells the bound out.
const _: () = assert!(MAX_PREWAKE_US == 10_000);

/// Sample rate assumed when `SLOTPOOL_SAMPLE_RATE` is not set.
pub const DEFAULT_SAMPLE_RATE: u32 = 48_000;

/// The start-up environment, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartEnv {
    /// `SLOTPOOL_REGION_FD`.
    pub region_fd: RawFd,
    /// `SLOTPOOL_SLOT`.
    pub slot: String,
    /// `SLOTPOOL_READY_FD`.
    pub ready_fd: Option<RawFd>,
    /// `SLOTPOOL_GO_FD`.
    pub go_fd: Option<RawFd>,
    /// `SLOTPOOL_PARENT_PID`.
    pub parent_pid: Option<i32>,
    /// `SLOTPOOL_SAMPLE_RATE`.
    pub sample_rate: u32,
    /// `SLOTPOOL_PREWAKE_US` (zero: off).
    pub prewake: Duration,
}

/// Why the start-up environment is unusable (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// Required variables are absent: the program was started by hand.
    #[error(
        "this is a slotpool worker: it runs under the slotpool host, which starts it with \
         {ENV_REGION_FD} and {ENV_SLOT} set (missing: {missing}); add it to a config as a \
         slot program and use `slotpool run CONFIG`"
    )]
    NotUnderHost {
        /// The names missing.
        missing: String,
    },
    /// A variable is present but malformed.
    #[error(
        "{name}={value:?} is not valid: expected {expected}; the host that started this worker is broken"
    )]
    Malformed {
        /// Variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

impl StartEnv {
    /// Reads the environment of this process.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Parses from any lookup (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        // A standby has its region under another name, and a go pipe.
        let standby = get(ENV_REGION_FD).is_none() && get(ENV_STANDBY_REGION_FD).is_some();
        let required: &[&str] = if standby {
            &[ENV_STANDBY_REGION_FD, ENV_GO_FD, ENV_SLOT]
        } else {
            &[ENV_REGION_FD, ENV_SLOT]
        };
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|k| get(k).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(EnvError::NotUnderHost {
                missing: missing.join(", "),
            });
        }
        let fd =
            |name: &'static str| -> Result<Option<RawFd>, EnvError> {
                get(name)
                    .map(|v| {
                        v.trim().parse::<RawFd>().ok().filter(|&n| n >= 0).ok_or(
                            EnvError::Malformed {
                                name,
                                value: v,
                                expected: "a decimal file descriptor number",
                            },
                        )
                    })
                    .transpose()
            };
        let region_fd = if standby {
            fd(ENV_STANDBY_REGION_FD)?
        } else {
            fd(ENV_REGION_FD)?
        }
        .expect("checked present");
        let ready_fd = fd(ENV_READY_FD)?;
        // Only a standby waits for go: a go pipe beside SLOTPOOL_REGION_FD is ignored.
        let go_fd = if standby { fd(ENV_GO_FD)? } else { None };
        let slot = get(ENV_SLOT).expect("checked present");
        if slot.is_empty() {
            return Err(EnvError::Malformed {
                name: ENV_SLOT,
                value: slot,
                expected: "the slot name <program>:<index>",
            });
        }
        let parent_pid = get(ENV_PARENT_PID)
            .map(|v| {
                v.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or(EnvError::Malformed {
                        name: ENV_PARENT_PID,
                        value: v,
                        expected: "the host's pid",
                    })
            })
            .transpose()?;
        let sample_rate = get(ENV_SAMPLE_RATE)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|r| (1_000..=768_000).contains(r))
                    .ok_or(EnvError::Malformed {
                        name: ENV_SAMPLE_RATE,
                        value: v,
                        expected: "a sample rate in Hz, 1000..=768000",
                    })
            })
            .transpose()?
            .unwrap_or(DEFAULT_SAMPLE_RATE);
        let prewake_us = get(ENV_PREWAKE_US)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|us| *us <= MAX_PREWAKE_US)
                    .ok_or(EnvError::Malformed {
                        name: ENV_PREWAKE_US,
                        value: v,
                        expected: "microseconds, 0..=10000",
                    })
            })
            .transpose()?
            .unwrap_or(0);
        Ok(Self {
            region_fd,
            slot,
            ready_fd,
            go_fd,
            parent_pid,
            sample_rate,
            prewake: Duration::from_micros(u64::from(prewake_us)),
        })
    }
}

/// Arms `PR_SET_PDEATHSIG(SIGKILL)` for this process (thread).
pub fn set_parent_death_kill() -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
}

/// The parent's pid now.
pub fn parent_pid() -> i32 {
    nix::unistd::getppid().as_raw()
}

/// This process's pid.
pub fn own_pid() -> u32 {
    std::process::id()
}

/// Takes ownership of an fd inherited across exec, by number, without `unsafe`: the
/// fd's file is opened again through `/proc/self/fd/N` (a new close-on-exec descriptor of
/// the same memfd or pipe) and the inherited number is closed, so no child of the worker
/// inherits it. `write` selects the access mode; a pipe is opened non-blocking so that a
/// host that stopped reading cannot make the worker hang in `open`.
pub fn take_inherited_fd(raw: RawFd, write: bool, pipe: bool) -> std::io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{raw}");
    let mut options = OpenOptions::new();
    if pipe {
        use std::os::unix::fs::OpenOptionsExt;
        options.write(true).custom_flags(nix::libc::O_NONBLOCK);
    } else {
        options.read(true).write(write);
    }
    let file = options.open(&path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("fd {raw} passed by the host cannot be opened through {path}: {e}"),
        )
    })?;
    // The inherited number is ours alone (nothing in this process opened it; the host
    // passed it for this purpose), and the reopened file keeps the object alive.
    nix::unistd::close(raw).map_err(|e| {
        std::io::Error::other(format!("closing the inherited fd {raw} failed: {e}"))
    })?;
    Ok(OwnedFd::from(file))
}

/// What a standby heard on its go pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoSignal {
    /// A byte: take over the slot now.
    Go,
    /// End of file: the host released the standby (or is gone).
    Released,
    /// SIGTERM/SIGINT arrived while waiting.
    Stopped,
}

/// Blocks until the host writes a byte on the go pipe, closes it, or a stop signal
/// arrives. Waits in poll(2), which a signal always interrupts (signal(7): never
/// restarted, whatever SA_RESTART says), so SIGTERM ends a parked standby too.
pub fn wait_go(fd: OwnedFd, stop: &AtomicBool) -> std::io::Result<GoSignal> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::Read;
    use std::os::fd::AsFd;
    let mut f = File::from(fd);
    let mut byte = [0u8; 1];
    loop {
        // Relaxed: a flag set by the signal handler; nothing is published through it.
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(GoSignal::Stopped);
        }
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        match f.read(&mut byte) {
            Ok(0) => return Ok(GoSignal::Released),
            Ok(_) => return Ok(GoSignal::Go),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes the readiness byte `\n` to the ready pipe and closes it.
pub fn report_ready(fd: OwnedFd) -> std::io::Result<()> {
    let mut f = File::from(fd);
    f.write_all(b"\n")
}

/// The flag set by SIGTERM and SIGINT (set in the handler; read by the loop). With
/// `ignore_sigterm`, SIGTERM is caught and dropped (fault mode).
pub fn stop_flag(ignore_sigterm: bool) -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGINT, stop.clone())?;
    if ignore_sigterm {
        // Caught into a flag nobody reads: the default action (exit) is gone.
        signal_hook::flag::register(SIGTERM, Arc::new(AtomicBool::new(false)))?;
    } else {
        signal_hook::flag::register(SIGTERM, stop.clone())?;
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_parses_required_and_optional_variables() {
        let env = StartEnv::from_lookup(lookup(&[
            (ENV_REGION_FD, "3"),
            (ENV_SLOT, "synth:0"),
            (ENV_READY_FD, "4"),
            (ENV_PARENT_PID, "1234"),
            (ENV_SAMPLE_RATE, "44100"),
            (ENV_PREWAKE_US, "150"),
        ]))
        .unwrap();
        assert_eq!(
            env,
            StartEnv {
                region_fd: 3,
                slot: "synth:0".into(),
                ready_fd: Some(4),
                go_fd: None,
                parent_pid: Some(1234),
                sample_rate: 44100,
                prewake: Duration::from_micros(150),
            }
        );
        let env =
            StartEnv::from_lookup(lookup(&[(ENV_REGION_FD, "3"), (ENV_SLOT, "a:1")])).unwrap();
        assert_eq!(
            (env.ready_fd, env.parent_pid, env.sample_rate, env.prewake),
            (None, None, 48_000, Duration::ZERO)
        );
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = StartEnv::from_lookup(lookup(&[])).unwrap_err().to_string();
        assert!(
            e.contains("SLOTPOOL_REGION_FD, SLOTPOOL_SLOT") && e.contains("slotpool run"),
            "{e}"
        );
        let e = StartEnv::from_lookup(lookup(&[(ENV_REGION_FD, "x"), (ENV_SLOT, "a:0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SLOTPOOL_REGION_FD=\"x\""), "{e}");
        let e = StartEnv::from_lookup(lookup(&[
            (ENV_REGION_FD, "3"),
            (ENV_SLOT, "a:0"),
            (ENV_SAMPLE_RATE, "12"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("1000..=768000"), "{e}");
        let e = StartEnv::from_lookup(lookup(&[
            (ENV_REGION_FD, "3"),
            (ENV_SLOT, "a:0"),
            (ENV_PREWAKE_US, "20000"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SLOTPOOL_PREWAKE_US") && e.contains("0..=10000"),
            "{e}"
        );
    }

    #[test]
    fn a_standby_has_its_region_under_another_name_and_a_go_pipe() {
        let env = StartEnv::from_lookup(lookup(&[
            (ENV_STANDBY_REGION_FD, "3"),
            (ENV_GO_FD, "5"),
            (ENV_SLOT, "synth:0"),
        ]))
        .unwrap();
        assert_eq!((env.region_fd, env.go_fd), (3, Some(5)));
        // Without the go pipe it is not started right: refused, naming what is missing.
        let e = StartEnv::from_lookup(lookup(&[
            (ENV_STANDBY_REGION_FD, "3"),
            (ENV_SLOT, "synth:0"),
        ]))
        .unwrap_err();
        assert!(
            matches!(&e, EnvError::NotUnderHost { missing } if missing == ENV_GO_FD),
            "{e}"
        );
        // A go pipe beside a plain region fd is not a standby: it runs at once.
        let env = StartEnv::from_lookup(lookup(&[
            (ENV_REGION_FD, "3"),
            (ENV_GO_FD, "5"),
            (ENV_SLOT, "synth:0"),
        ]))
        .unwrap();
        assert_eq!((env.region_fd, env.go_fd), (3, None));
    }

    #[test]
    fn inherited_fd_is_reopened_and_the_number_closed() {
        use std::io::Read;
        use std::os::fd::IntoRawFd;
        let (reader, writer) = std::io::pipe().unwrap();
        let raw = OwnedFd::from(writer).into_raw_fd();
        let taken = take_inherited_fd(raw, true, true).unwrap();
        report_ready(taken).unwrap();
        // read_to_string returns only once every write end is closed: the reopened one
        // (dropped by report_ready) and the inherited number (closed by take_inherited_fd).
        let mut got = String::new();
        let mut reader = reader;
        reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, "\n");
        let e = take_inherited_fd(9999, true, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fd 9999"), "{e}");
    }
}
