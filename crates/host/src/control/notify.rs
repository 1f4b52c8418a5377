//! sd_notify: telling the service manager above the host how it is doing.
//!
//! Under systemd with `Type=notify`, `NOTIFY_SOCKET` names a datagram socket
//! (a path, or an abstract name written with a leading `@`). The host sends:
//!
//! - `READY=1` once the autostart programs are RUNNING ([`Notifier::ready`]);
//! - `RELOADING=1` when a reload starts, `READY=1` again when it is applied;
//! - `STOPPING=1` when shutdown begins ([`Notifier::stopping`]);
//! - `WATCHDOG=1` only while its loops make progress: call
//!   [`Notifier::watchdog_if_due`] from the loop itself, never from a timer
//!   thread, so a stuck loop stops the pings and systemd restarts the host;
//! - `STATUS=…` free text for `systemctl status`.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op that succeeds. Sends never
//! block: the socket is non-blocking, and a full receive queue on the other side
//! is reported as an error for the caller to log, not waited on.
//!
//! Children must not inherit the variables (a worker could otherwise send
//! `READY=1` in the host's name): the spawner removes [`CHILD_ENV_TO_REMOVE`]
//! from every child's environment.

use std::ffi::OsString;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Environment variables that describe the host's own service-manager contract
/// and must not leak into children.
pub const CHILD_ENV_TO_REMOVE: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Why the notification socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` holds an address this host cannot speak to.
    #[error(
        "NOTIFY_SOCKET={0:?} is not supported: expected an absolute path or an abstract name starting with '@'"
    )]
    UnsupportedAddress(OsString),
    /// `WATCHDOG_USEC` is not a positive integer.
    #[error("WATCHDOG_USEC={0:?} is not a positive number of microseconds")]
    BadWatchdogUsec(OsString),
    /// Creating the socket or sending failed.
    #[error("sd_notify to {addr:?}: {source}")]
    Io {
        /// The address from `NOTIFY_SOCKET`.
        addr: OsString,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    text: OsString,
}

/// A handle on the service manager's notification socket (or a no-op).
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
    last_watchdog: Option<Instant>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("socket", &self.target.as_ref().map(|t| &t.text))
            .field("watchdog", &self.watchdog)
            .finish()
    }
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
            last_watchdog: None,
        }
    }

    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` in the process
    /// environment. Absent `NOTIFY_SOCKET` gives a no-op notifier.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        Notifier::from_lookup(|key| std::env::var_os(key))
    }

    /// Like [`Notifier::from_env`], reading the variables through `var`
    /// (tests use it to avoid mutating the process environment).
    pub fn from_lookup(var: impl Fn(&str) -> Option<OsString>) -> Result<Notifier, NotifyError> {
        let watchdog = watchdog_from(
            var("WATCHDOG_USEC"),
            var("WATCHDOG_PID"),
            std::process::id(),
        )?;
        let Some(text) = var("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
            return Ok(Notifier {
                target: None,
                watchdog: None,
                last_watchdog: None,
            });
        };
        let bytes = text.as_bytes();
        let io_err = |source| NotifyError::Io {
            addr: text.clone(),
            source,
        };
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(std::path::Path::new(&text)).map_err(io_err)?,
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]).map_err(io_err)?,
            _ => return Err(NotifyError::UnsupportedAddress(text)),
        };
        let socket = UnixDatagram::unbound().map_err(io_err)?;
        socket.set_nonblocking(true).map_err(io_err)?;
        Ok(Notifier {
            target: Some(Target { socket, addr, text }),
            watchdog,
            last_watchdog: None,
        })
    }

    /// Whether a service manager is listening (`NOTIFY_SOCKET` was set).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Send `state` as is (`KEY=VALUE` lines separated by `\n`).
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        target
            .socket
            .send_to_addr(state.as_bytes(), &target.addr)
            .map(drop)
            .map_err(|source| NotifyError::Io {
                addr: target.text.clone(),
                source,
            })
    }

    /// `READY=1`: startup (or a reload) is complete.
    pub fn ready(&self) -> Result<(), NotifyError> {
        self.notify("READY=1")
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.notify("STOPPING=1")
    }

    /// `RELOADING=1` with `MONOTONIC_USEC` (which `Type=notify-reload` requires);
    /// send [`Notifier::ready`] when the reload is done.
    pub fn reloading(&self) -> Result<(), NotifyError> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"))
    }

    /// `STATUS=text` (newlines become spaces: one line for `systemctl status`).
    pub fn status(&self, text: &str) -> Result<(), NotifyError> {
        self.notify(&format!("STATUS={}", text.replace(['\n', '\r'], " ")))
    }

    /// `WATCHDOG=1`, unconditionally.
    pub fn watchdog(&mut self) -> Result<(), NotifyError> {
        self.last_watchdog = Some(Instant::now());
        self.notify("WATCHDOG=1")
    }

    /// The watchdog timeout systemd applies to this process (`WATCHDOG_USEC`,
    /// when `WATCHDOG_PID` is absent or names this process); `None` when no
    /// watchdog is armed.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Send `WATCHDOG=1` if a watchdog is armed and half its timeout has passed
    /// since the last ping (systemd's advice). Call it once per iteration of the
    /// loop whose progress it vouches for. Returns whether a ping was sent.
    pub fn watchdog_if_due(&mut self, now: Instant) -> Result<bool, NotifyError> {
        let Some(timeout) = self.watchdog else {
            return Ok(false);
        };
        if self.target.is_none() {
            return Ok(false);
        }
        let due = match self.last_watchdog {
            None => true,
            Some(last) => now.saturating_duration_since(last) >= timeout / 2,
        };
        if due {
            self.watchdog()?;
        }
        Ok(due)
    }

    /// How long the loop may sleep before [`Notifier::watchdog_if_due`] must be
    /// called again; `None` without a watchdog.
    pub fn watchdog_due_in(&self, now: Instant) -> Option<Duration> {
        let timeout = self.watchdog?;
        self.target.as_ref()?;
        Some(match self.last_watchdog {
            None => Duration::ZERO,
            Some(last) => (timeout / 2).saturating_sub(now.saturating_duration_since(last)),
        })
    }
}

fn watchdog_from(
    usec: Option<OsString>,
    pid: Option<OsString>,
    my_pid: u32,
) -> Result<Option<Duration>, NotifyError> {
    let Some(usec) = usec.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Some(pid) = pid.filter(|s| !s.is_empty()) {
        // Meant for another process (we inherited it): not ours to honour.
        if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(my_pid) {
            return Ok(None);
        }
    }
    match usec.to_str().and_then(|u| u.parse::<u64>().ok()) {
        Some(n) if n > 0 => Ok(Some(Duration::from_micros(n))),
        _ => Err(NotifyError::BadWatchdogUsec(usec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn watchdog_usec_is_honoured_only_for_this_pid() {
        assert_eq!(
            watchdog_from(os("2000000"), None, 7).unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watchdog_from(os("2000000"), os("7"), 7).unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_from(os("2000000"), os("8"), 7).unwrap(), None);
        assert_eq!(watchdog_from(None, os("7"), 7).unwrap(), None);
        assert!(watchdog_from(os("soon"), None, 7).is_err());
        assert!(watchdog_from(os("0"), None, 7).is_err());
    }

    #[test]
    fn absent_socket_is_a_silent_no_op() {
        let mut n = Notifier::from_lookup(|_| None).unwrap();
        assert!(!n.is_enabled());
        n.ready().unwrap();
        assert!(!n.watchdog_if_due(Instant::now()).unwrap());
    }

    #[test]
    fn relative_or_vsock_addresses_are_refused_with_the_value() {
        let err = Notifier::from_lookup(|k| (k == "NOTIFY_SOCKET").then(|| "vsock:2:1".into()))
            .unwrap_err();
        assert!(err.to_string().contains("vsock:2:1"), "{err}");
    }
}
