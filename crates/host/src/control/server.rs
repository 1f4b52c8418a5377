//! The control socket: a non-blocking Unix-socket server driven by the
//! supervisor's poll loop.
//!
//! # Driving it
//!
//! ```text
//! let mut server = ControlServer::bind(&ControlServer::default_path(&config_path))?;
//! loop {
//!     // add server.poll_interest() to the loop's pollfds, and sleep at most
//!     // server.next_timeout() (plus the loop's own fds and timers);
//!     poll(...);
//!     server.service(&mut handler);            // accept, read, dispatch, write
//!     for ev in state_changes { server.publish(&ev); }
//! }
//! ```
//!
//! [`ControlServer::wait_and_service`] is that loop body for a server polled on
//! its own (tests, small tools).
//!
//! # What a client cannot do to the host
//!
//! Every piece of per-client work is bounded ([`ServerLimits`]):
//! - a client of another uid is refused with one error line and closed
//!   (SO_PEERCRED, checked at accept);
//! - a request line is at most [`ServerLimits::max_frame`] bytes: a longer one is
//!   answered with an error and the connection closed; malformed JSON is answered
//!   with an error and the connection goes on;
//! - a request must complete within [`ServerLimits::idle_timeout`] of the
//!   previous one (or of the accept), else the client is dropped — a stalled or
//!   trickling client costs one idle socket for that long, never a wait;
//! - output is buffered, never written with a blocking call; a client whose
//!   buffer is not drained for [`ServerLimits::write_timeout`], or an `events`
//!   subscriber that falls [`ServerLimits::max_output`] bytes behind, is dropped;
//!   a pipelining client that does not read its answers is simply not read
//!   further (back-pressure) until it does, or until it times out;
//! - one call of [`ControlServer::service`] accepts, reads and answers a bounded
//!   amount per client, so one busy client cannot starve the loop;
//! - nothing a client sends can make the server panic: every parse error is an
//!   error response.
//!
//! # Files
//!
//! The socket is created mode 0600 in a directory that must be private
//! (owned by the host's uid, no group/other permissions, not a symlink; created
//! 0700 when missing). Beside it, `<socket>.lock` holds an exclusive flock for the
//! server's lifetime, so two hosts can never both believe they own one path; a
//! stale socket (nothing holds the lock and nothing answers) is replaced. The
//! socket is removed on drop; the lock file stays (removing a lock file races
//! with the next locker).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{MsgFlags, getsockopt, send, sockopt::PeerCredentials};
use serde::Serialize;

use super::ControlHandler;
use super::protocol::{MAX_FRAME, Request, Response, StateEvent};

/// Bounds on what one client may cost the host. The defaults suit a human at
/// `slotpool ctl` and scripts polling `status`.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Longest request line, newline included.
    pub max_frame: usize,
    /// Most bytes of output buffered for one client.
    pub max_output: usize,
    /// Time allowed for a client to complete its next request (from the accept
    /// or the previous request / the last byte of the previous answer written).
    pub idle_timeout: Duration,
    /// Time allowed for a client to accept some of its pending output.
    pub write_timeout: Duration,
    /// Connections served at once; more are refused with an error line.
    pub max_clients: usize,
    /// How often `tail -f` followers look for new data and rotation.
    pub tail_poll: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_frame: MAX_FRAME,
            max_output: 4 * 1024 * 1024,
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_clients: 64,
            tail_poll: Duration::from_millis(200),
        }
    }
}

/// Why the control server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another host holds the socket (its lock, or it answers on it).
    #[error(
        "another slotpool host is already listening on {path}: stop it first (slotpool ctl --socket {path} shutdown) or give this config another [control] socket"
    )]
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket sits at the socket path.
    #[error(
        "{path} exists and is not a socket; refusing to replace it: remove it or choose another [control] socket"
    )]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket's directory is not private to this uid.
    #[error(
        "control socket directory {dir} is unsafe: {reason}; the socket must live in a directory only uid {uid} can enter (mkdir -m 0700), or leave [control] socket unset to use the default"
    )]
    UnsafeDir {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The host's effective uid.
        uid: u32,
    },
    /// The path does not fit in a `sockaddr_un`.
    #[error(
        "control socket path {path} is {len} bytes long; Unix sockets allow at most 107: choose a shorter [control] socket"
    )]
    PathTooLong {
        /// The socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The path has no parent directory or file name.
    #[error("control socket path {path} must name a file inside a directory")]
    BadPath {
        /// The socket path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("control socket: {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ControlError + 'a {
    move |source| ControlError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The directory default socket paths live in: `$XDG_RUNTIME_DIR/slotpool`, or
/// `/tmp/slotpool-<uid>` when `XDG_RUNTIME_DIR` is unset or not absolute.
pub fn default_dir() -> PathBuf {
    default_dir_from(
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
        nix::unistd::geteuid().as_raw(),
    )
}

fn default_dir_from(xdg_runtime_dir: Option<&OsStr>, uid: u32) -> PathBuf {
    match xdg_runtime_dir.map(Path::new) {
        Some(dir) if dir.is_absolute() => dir.join("slotpool"),
        _ => PathBuf::from(format!("/tmp/slotpool-{uid}")),
    }
}

/// `<default dir>/<config file stem>.sock` ([`default_dir`]).
pub fn default_path(config_path: &Path) -> PathBuf {
    default_dir().join(socket_file_name(config_path))
}

fn socket_file_name(config_path: &Path) -> String {
    let stem = config_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "slotpool".to_owned());
    format!("{stem}.sock")
}

/// Make sure `dir` exists and is private to `uid`: created 0700 when missing;
/// otherwise it must be a real directory (not a symlink) owned by `uid` with no
/// group or other permissions.
fn ensure_private_dir(dir: &Path, uid: u32) -> Result<(), ControlError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("creating directory", dir))?;
        }
        Err(e) => return Err(io_err("inspecting directory", dir)(e)),
        Ok(_) => {}
    }
    // Check again after creating: another process may have raced us to it.
    let meta = fs::symlink_metadata(dir).map_err(io_err("inspecting directory", dir))?;
    let unsafe_dir = |reason: String| ControlError::UnsafeDir {
        dir: dir.to_owned(),
        reason,
        uid,
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(unsafe_dir(format!("it is owned by uid {}", meta.uid())));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "its mode is {mode:04o}, which lets other users in"
        )));
    }
    Ok(())
}

/// Where a streaming connection stands.
enum Mode {
    /// Request/response.
    Requests,
    /// Subscribed to state events.
    Events,
    /// Sending a log file.
    Tail(Box<TailFollower>),
}

struct Client {
    stream: UnixStream,
    /// Bytes received, not yet a complete line.
    input: Vec<u8>,
    /// Bytes to send.
    output: VecDeque<u8>,
    mode: Mode,
    /// When the client last completed a request (or connected).
    last_request: Instant,
    /// When the client last accepted output (or output became pending).
    last_write: Instant,
    /// The peer shut its side: answer what is buffered, then close.
    peer_closed: bool,
    /// Close once `output` is flushed.
    close_after_flush: bool,
    /// Close now.
    dead: bool,
    peer_pid: i32,
}

impl Client {
    fn queue<T: Serialize>(&mut self, frame: &T) {
        if !queue_frame(&mut self.output, &mut self.last_write, frame) {
            self.dead = true;
        }
    }

    /// Write as much pending output as the socket takes, without blocking.
    fn flush(&mut self) {
        while !self.output.is_empty() && !self.dead {
            let (front, _) = self.output.as_slices();
            match send(
                self.stream.as_raw_fd(),
                front,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => break,
                Ok(n) => {
                    self.output.drain(..n);
                    self.last_write = Instant::now();
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => self.dead = true,
            }
        }
    }

    fn has_complete_line(&self) -> bool {
        matches!(self.mode, Mode::Requests) && self.input.contains(&b'\n')
    }
}

/// Append `frame` and a newline to `output`; false if it cannot be encoded
/// (short of a bug it always can: the caller drops the client rather than panic).
fn queue_frame<T: Serialize>(
    output: &mut VecDeque<u8>,
    last_write: &mut Instant,
    frame: &T,
) -> bool {
    match serde_json::to_vec(frame) {
        Ok(bytes) => {
            if output.is_empty() {
                *last_write = Instant::now();
            }
            output.extend(bytes);
            output.push_back(b'\n');
            true
        }
        Err(e) => {
            tracing::error!("control: cannot encode a response: {e}");
            false
        }
    }
}

/// The control socket server. See the module docs.
pub struct ControlServer {
    path: PathBuf,
    listener: UnixListener,
    /// Held for the server's lifetime; see the module docs.
    _lock: Flock<File>,
    /// (dev, ino) of the socket we bound, so drop removes only our own.
    socket_id: (u64, u64),
    uid: u32,
    limits: ServerLimits,
    clients: Vec<Client>,
    /// Accept is paused (after EMFILE/ENFILE) until then.
    accept_paused_until: Option<Instant>,
    next_tail_pump: Instant,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .field("uid", &self.uid)
            .field("clients", &self.clients.len())
            .finish()
    }
}

/// How many connections one `service` call accepts.
const ACCEPTS_PER_SERVICE: usize = 16;
/// How many requests of one client one `service` call answers.
const REQUESTS_PER_SERVICE: usize = 16;
/// Bytes read from a log file per follower per pump.
const TAIL_CHUNK: usize = 16 * 1024;

impl ControlServer {
    /// `<default dir>/<config file stem>.sock`; see [`default_path`].
    pub fn default_path(config_path: &Path) -> PathBuf {
        default_path(config_path)
    }

    /// Listen on `path` with the default [`ServerLimits`].
    pub fn bind(path: &Path) -> Result<ControlServer, ControlError> {
        ControlServer::bind_with(path, ServerLimits::default())
    }

    /// Listen on `path`: check (or create 0700) its directory, take the lock,
    /// replace a stale socket, bind, make the socket 0600.
    pub fn bind_with(path: &Path, limits: ServerLimits) -> Result<ControlServer, ControlError> {
        let uid = nix::unistd::geteuid().as_raw();
        let len = path.as_os_str().len();
        if len > 107 {
            return Err(ControlError::PathTooLong {
                path: path.to_owned(),
                len,
            });
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(ControlError::BadPath {
                path: path.to_owned(),
            });
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        ensure_private_dir(dir, uid)?;

        let mut lock_name = name.to_owned();
        lock_name.push(".lock");
        let lock_path = dir.join(lock_name);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(io_err("opening lock file", &lock_path))?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(ControlError::AlreadyRunning {
                    path: path.to_owned(),
                });
            }
            Err((_, errno)) => {
                return Err(io_err("locking", &lock_path)(io::Error::from(errno)));
            }
        };

        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ControlError::AlreadyRunning {
                        path: path.to_owned(),
                    });
                }
                // Stale: its host died without removing it, and we hold the lock.
                tracing::info!("control: replacing stale socket {}", path.display());
                fs::remove_file(path).map_err(io_err("removing stale socket", path))?;
            }
            Ok(_) => {
                return Err(ControlError::NotASocket {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspecting", path)(e)),
        }

        let listener = UnixListener::bind(path).map_err(io_err("binding", path))?;
        // The directory is private, so nobody can reach the socket in the
        // moment between bind and chmod.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(io_err("setting mode 0600 on", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("setting non-blocking", path))?;
        let meta = fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
        Ok(ControlServer {
            path: path.to_owned(),
            listener,
            _lock: lock,
            socket_id: (meta.dev(), meta.ino()),
            uid,
            limits,
            clients: Vec::new(),
            accept_paused_until: None,
            next_tail_pump: Instant::now(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections currently open (any mode).
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// `events` subscribers currently connected.
    pub fn subscriber_count(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| matches!(c.mode, Mode::Events))
            .count()
    }

    /// The fds to poll for `POLLIN`: the listener and every client. See also
    /// [`ControlServer::poll_interest`], which adds `POLLOUT` where output is
    /// pending; with `pollfds` alone pending output is retried on the timeout
    /// [`ControlServer::next_timeout`] gives.
    pub fn pollfds(&self) -> Vec<BorrowedFd<'_>> {
        self.poll_interest().into_iter().map(|(fd, _)| fd).collect()
    }

    /// The fds to poll, each with the events that matter for it.
    pub fn poll_interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut fds = Vec::with_capacity(self.clients.len() + 1);
        if self.accept_paused_until.is_none() {
            fds.push((self.listener.as_fd(), PollFlags::POLLIN));
        }
        for c in &self.clients {
            let mut flags = PollFlags::empty();
            if c.output.len() < self.limits.max_output && !c.peer_closed {
                flags |= PollFlags::POLLIN;
            }
            if !c.output.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push((c.stream.as_fd(), flags));
        }
        fds
    }

    /// The longest the loop may sleep before calling [`ControlServer::service`]
    /// again even if no fd is ready (timeouts to enforce, followers to pump,
    /// buffered requests to answer); `None` when only fd readiness matters.
    pub fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Instant> = self.accept_paused_until;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for c in &self.clients {
            if c.dead || (c.close_after_flush && c.output.is_empty()) {
                consider(now);
                continue;
            }
            if c.has_complete_line() && c.output.len() < self.limits.max_output {
                consider(now);
            }
            if !c.output.is_empty() {
                consider(c.last_write + self.limits.write_timeout);
                // For loops that poll without POLLOUT.
                consider(now + Duration::from_millis(20));
            }
            match &c.mode {
                Mode::Requests => {
                    consider(c.last_request.max(c.last_write) + self.limits.idle_timeout);
                }
                Mode::Events => {}
                Mode::Tail(_) => consider(self.next_tail_pump),
            }
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    /// Do all pending work without blocking: accept connections (refusing other
    /// uids), read and answer requests through `handler`, pump `tail` followers,
    /// write buffered output, drop clients past their bounds.
    pub fn service(&mut self, handler: &mut dyn ControlHandler) {
        let now = Instant::now();
        self.accept(now);
        for i in 0..self.clients.len() {
            self.read_client(i);
            self.answer_client(i, handler);
        }
        self.pump_tails();
        self.enforce_timeouts(Instant::now());
        self.flush_and_reap();
    }

    /// Send `event` to every `events` subscriber; a subscriber that is
    /// [`ServerLimits::max_output`] bytes behind is dropped.
    pub fn publish(&mut self, event: &StateEvent) {
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Frame<'a> {
            Event(&'a StateEvent),
        }
        let Ok(mut line) = serde_json::to_vec(&Frame::Event(event)) else {
            tracing::error!("control: cannot encode event for {}", event.name);
            return;
        };
        line.push(b'\n');
        for c in &mut self.clients {
            if !matches!(c.mode, Mode::Events) || c.dead {
                continue;
            }
            if c.output.len() + line.len() > self.limits.max_output {
                tracing::warn!(
                    "control: dropping events subscriber pid {}: {} bytes behind",
                    c.peer_pid,
                    c.output.len()
                );
                c.dead = true;
                continue;
            }
            if c.output.is_empty() {
                c.last_write = Instant::now();
            }
            c.output.extend(&line);
            c.flush();
        }
        self.flush_and_reap();
    }

    /// Read what `tail` followers' log files have gained (following rotation)
    /// into their output, as far as their buffers allow. [`ControlServer::service`]
    /// calls it; call it on its own to pump more often.
    pub fn pump_tails(&mut self) {
        let now = Instant::now();
        let due = now >= self.next_tail_pump;
        let room_limit = self.limits.max_output / 2;
        for c in &mut self.clients {
            let Client {
                mode,
                output,
                last_write,
                close_after_flush,
                dead,
                ..
            } = c;
            let Mode::Tail(follower) = mode else {
                continue;
            };
            if *dead || *close_after_flush {
                continue;
            }
            // A fresh follower sends its first chunk at once; then every tail_poll.
            if !due && follower.started {
                continue;
            }
            follower.started = true;
            // Several chunks per pump while there is room, bounded.
            for _ in 0..4 {
                if output.len() >= room_limit {
                    break;
                }
                let mut queue = |frame: &Response| {
                    if !queue_frame(output, last_write, frame) {
                        *dead = true;
                    }
                };
                match follower.pump() {
                    Ok(TailStep::Data(data)) => queue(&Response::TailData { data }),
                    Ok(TailStep::Idle) => break,
                    Ok(TailStep::End(rest)) => {
                        if let Some(data) = rest {
                            queue(&Response::TailData { data });
                        }
                        queue(&Response::TailEnd);
                        *close_after_flush = true;
                        break;
                    }
                    Err(message) => {
                        queue(&Response::error(message));
                        *close_after_flush = true;
                        break;
                    }
                }
            }
        }
        if due {
            self.next_tail_pump = now + self.limits.tail_poll;
        }
    }

    /// Poll this server's fds for up to `max_wait` (less if
    /// [`ControlServer::next_timeout`] says so), then [`ControlServer::service`].
    pub fn wait_and_service(
        &mut self,
        handler: &mut dyn ControlHandler,
        max_wait: Duration,
    ) -> io::Result<()> {
        let wait = self.next_timeout().map_or(max_wait, |t| t.min(max_wait));
        {
            let mut fds: Vec<PollFd<'_>> = self
                .poll_interest()
                .into_iter()
                .map(|(fd, flags)| PollFd::new(fd, flags))
                .collect();
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.service(handler);
        Ok(())
    }

    fn accept(&mut self, now: Instant) {
        if let Some(until) = self.accept_paused_until {
            if now < until {
                return;
            }
            self.accept_paused_until = None;
        }
        for _ in 0..ACCEPTS_PER_SERVICE {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the pending connection stays queued
                    // and the listener stays readable; pause instead of spinning.
                    tracing::warn!("control: accept on {} failed: {e}", self.path.display());
                    self.accept_paused_until = Some(now + Duration::from_millis(100));
                    return;
                }
            };
            let mut client = Client {
                stream,
                input: Vec::new(),
                output: VecDeque::new(),
                mode: Mode::Requests,
                last_request: now,
                last_write: now,
                peer_closed: false,
                close_after_flush: false,
                dead: false,
                peer_pid: 0,
            };
            if let Err(e) = client.stream.set_nonblocking(true) {
                tracing::warn!("control: cannot make a connection non-blocking: {e}");
                continue;
            }
            match getsockopt(&client.stream, PeerCredentials) {
                Ok(cred) if cred.uid() == self.uid => client.peer_pid = cred.pid(),
                Ok(cred) => {
                    tracing::warn!(
                        "control: refused a client of uid {} (pid {}) on {}",
                        cred.uid(),
                        cred.pid(),
                        self.path.display()
                    );
                    client.queue(&Response::error(format!(
                        "refused: this control socket serves uid {} only and you are uid {}; run slotpool ctl as the user the host runs as",
                        self.uid,
                        cred.uid()
                    )));
                    client.flush();
                    continue;
                }
                Err(e) => {
                    tracing::warn!("control: cannot read a client's credentials: {e}");
                    continue;
                }
            }
            if self.clients.len() >= self.limits.max_clients {
                client.queue(&Response::error(format!(
                    "refused: the host already serves {} control connections; close some (events or tail -f) and retry",
                    self.limits.max_clients
                )));
                client.flush();
                continue;
            }
            self.clients.push(client);
        }
    }

    fn read_client(&mut self, i: usize) {
        let max_frame = self.limits.max_frame;
        let max_output = self.limits.max_output;
        let c = &mut self.clients[i];
        if c.dead || c.peer_closed || c.output.len() >= max_output {
            return;
        }
        // Stop reading while a complete request waits (back-pressure).
        if c.has_complete_line() {
            return;
        }
        let mut buf = [0u8; 8192];
        let mut budget = max_frame + buf.len();
        while budget > 0 {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    c.peer_closed = true;
                    if !matches!(c.mode, Mode::Requests) {
                        c.dead = true;
                    }
                    return;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    if !matches!(c.mode, Mode::Requests) {
                        // Streaming connections take no more requests; their input
                        // is read only to notice the peer leaving.
                        continue;
                    }
                    c.input.extend_from_slice(&buf[..n]);
                    if c.input.contains(&b'\n') {
                        return;
                    }
                    if c.input.len() >= max_frame {
                        c.queue(&Response::error(format!(
                            "request too large: more than {max_frame} bytes without a newline; send one JSON object per line"
                        )));
                        c.input.clear();
                        c.close_after_flush = true;
                        c.peer_closed = true;
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.dead = true;
                    return;
                }
            }
        }
    }

    fn answer_client(&mut self, i: usize, handler: &mut dyn ControlHandler) {
        let max_frame = self.limits.max_frame;
        let max_output = self.limits.max_output;
        let c = &mut self.clients[i];
        for _ in 0..REQUESTS_PER_SERVICE {
            if c.dead || c.close_after_flush || !matches!(c.mode, Mode::Requests) {
                return;
            }
            if c.output.len() >= max_output {
                return;
            }
            let Some(end) = c.input.iter().position(|&b| b == b'\n') else {
                if c.peer_closed && !c.input.is_empty() {
                    // The last request lacks its newline: answer it anyway.
                    let line = std::mem::take(&mut c.input);
                    dispatch(c, &line, handler);
                }
                if c.peer_closed {
                    c.close_after_flush = true;
                }
                return;
            };
            let line: Vec<u8> = c.input.drain(..=end).collect();
            if line.len() > max_frame {
                c.queue(&Response::error(format!(
                    "request too large: {} bytes, at most {max_frame}; send one JSON object per line",
                    line.len()
                )));
                c.close_after_flush = true;
                return;
            }
            c.last_request = Instant::now();
            dispatch(c, &line[..end], handler);
        }
    }

    fn enforce_timeouts(&mut self, now: Instant) {
        let limits = &self.limits;
        for c in &mut self.clients {
            if c.dead {
                continue;
            }
            if !c.output.is_empty() && now.duration_since(c.last_write) > limits.write_timeout {
                tracing::warn!(
                    "control: dropping client pid {}: it has not read its output for {:?}",
                    c.peer_pid,
                    limits.write_timeout
                );
                c.dead = true;
                continue;
            }
            if matches!(c.mode, Mode::Requests)
                && c.output.is_empty()
                && !c.close_after_flush
                && now.duration_since(c.last_request.max(c.last_write)) > limits.idle_timeout
            {
                tracing::debug!(
                    "control: dropping client pid {}: no complete request within {:?}",
                    c.peer_pid,
                    limits.idle_timeout
                );
                c.queue(&Response::error(format!(
                    "timed out: no complete request within {:?}",
                    limits.idle_timeout
                )));
                c.flush();
                c.dead = true;
            }
        }
    }

    fn flush_and_reap(&mut self) {
        for c in &mut self.clients {
            if !c.output.is_empty() {
                c.flush();
            }
        }
        self.clients
            .retain(|c| !(c.dead || c.close_after_flush && c.output.is_empty()));
    }
}

/// Parse one request line and queue its answer, or switch the connection to a
/// streaming mode.
fn dispatch(c: &mut Client, line: &[u8], handler: &mut dyn ControlHandler) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let req: Request = match serde_json::from_slice(line) {
        Ok(req) => req,
        Err(e) => {
            c.queue(&Response::error(format!(
                "malformed request: {e}; send one JSON object per line, e.g. {{\"verb\":\"status\"}}"
            )));
            return;
        }
    };
    match req {
        Request::Events => {
            c.queue(&Response::Subscribed);
            c.mode = Mode::Events;
            c.input.clear();
        }
        Request::Tail {
            ref name,
            stream,
            follow,
            bytes,
        } => {
            let name = name.clone();
            match handler.handle(req) {
                Response::Log { path } => match TailFollower::open(path, follow, bytes) {
                    Ok(follower) => {
                        c.mode = Mode::Tail(Box::new(follower));
                        c.input.clear();
                    }
                    Err(message) => c.queue(&Response::error(message)),
                },
                Response::Error { message } => c.queue(&Response::Error { message }),
                other => c.queue(&Response::error(format!(
                    "internal error: the host answered tail {name} ({stream}) with {}",
                    response_kind(&other)
                ))),
            }
        }
        req => {
            let verb = req.verb();
            match handler.handle(req) {
                r @ (Response::Done { .. } | Response::Error { .. } | Response::Status(_)) => {
                    c.queue(&r)
                }
                other => c.queue(&Response::error(format!(
                    "internal error: the host answered {verb} with {}",
                    response_kind(&other)
                ))),
            }
        }
    }
}

fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::Done { .. } => "done",
        Response::Error { .. } => "error",
        Response::Status(_) => "status",
        Response::Log { .. } => "log",
        Response::TailData { .. } => "tail_data",
        Response::TailEnd => "tail_end",
        Response::Subscribed => "subscribed",
        Response::Event(_) => "event",
    }
}

/// What one pump of a follower produced.
enum TailStep {
    /// Some of the file.
    Data(String),
    /// Nothing new yet.
    Idle,
    /// A non-following tail is complete (with the last undecoded bytes).
    End(Option<String>),
}

/// Reads a log file from an offset and follows it by path: when the path
/// starts naming a new file (rotation: rename + create), the old file is read
/// to its end first, then the new one from its start; when the file shrinks
/// under the read position (truncation), reading restarts at 0.
struct TailFollower {
    path: PathBuf,
    file: Option<File>,
    /// (dev, ino) of `file`.
    id: (u64, u64),
    /// Read position in `file`.
    pos: u64,
    follow: bool,
    /// Without `follow`: stop here (the size at open).
    end: u64,
    /// Bytes of an incomplete UTF-8 sequence carried to the next chunk.
    pending: Vec<u8>,
    /// Skip UTF-8 continuation bytes at the very start (we began mid-file).
    skip_continuation: bool,
    /// Sent its first chunk already.
    started: bool,
    /// The path names a new file: finish reading the old one, then switch.
    rotated: bool,
}

impl TailFollower {
    fn open(path: PathBuf, follow: bool, bytes: u64) -> Result<TailFollower, String> {
        let mut t = TailFollower {
            path,
            file: None,
            id: (0, 0),
            pos: 0,
            follow,
            end: 0,
            pending: Vec::new(),
            skip_continuation: false,
            started: false,
            rotated: false,
        };
        match File::open(&t.path) {
            Ok(mut file) => {
                let meta = file.metadata().map_err(|e| t.describe(&e))?;
                let len = meta.len();
                let start = len.saturating_sub(bytes);
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| t.describe(&e))?;
                t.id = (meta.dev(), meta.ino());
                t.pos = start;
                t.end = len;
                t.skip_continuation = start > 0;
                t.file = Some(file);
                Ok(t)
            }
            // Following a log that does not exist yet: wait for it.
            Err(e) if e.kind() == io::ErrorKind::NotFound && follow => Ok(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!(
                "no log yet: {} does not exist (has the program run since its log was configured?)",
                t.path.display()
            )),
            Err(e) => Err(t.describe(&e)),
        }
    }

    fn describe(&self, e: &io::Error) -> String {
        format!("cannot read log {}: {e}", self.path.display())
    }

    fn pump(&mut self) -> Result<TailStep, String> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(file) => {
                    let meta = file.metadata().map_err(|e| self.describe(&e))?;
                    self.id = (meta.dev(), meta.ino());
                    self.pos = 0;
                    self.file = Some(file);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(TailStep::Idle),
                Err(e) => return Err(self.describe(&e)),
            }
        }
        let want = if self.follow {
            TAIL_CHUNK
        } else {
            TAIL_CHUNK.min(usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(TAIL_CHUNK))
        };
        let mut buf = vec![0u8; want];
        let n = match self.file.as_mut() {
            Some(file) if want > 0 => loop {
                match file.read(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.describe(&e)),
                }
            },
            _ => 0,
        };
        if n > 0 {
            self.pos += n as u64;
            return Ok(match self.decode(&buf[..n]) {
                Some(text) => TailStep::Data(text),
                None => TailStep::Idle,
            });
        }
        if !self.follow {
            let rest = (!self.pending.is_empty())
                .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned());
            return Ok(TailStep::End(rest));
        }
        if self.rotated {
            // The old file is read to its end *after* the path was seen naming
            // a new file; the writer switched files before that, so the old
            // one is complete and nothing written to it is lost.
            self.file = None;
            self.rotated = false;
            self.pending.clear();
            self.skip_continuation = false;
            return Ok(TailStep::Idle);
        }
        // At the end of the open file: has the path moved on?
        match fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) != self.id => {
                // Rotated (rename + create): drain the old file on the next
                // pump, then open the new one.
                self.rotated = true;
                Ok(TailStep::Idle)
            }
            Ok(meta) if meta.len() < self.pos => {
                // Truncated in place (copytruncate): start over.
                if let Some(file) = self.file.as_mut() {
                    file.seek(SeekFrom::Start(0))
                        .map_err(|e| self.describe(&e))?;
                }
                self.pos = 0;
                self.pending.clear();
                Ok(TailStep::Idle)
            }
            // Same file, nothing new; or the path is gone for a moment
            // between rename and create: keep the old file and look again.
            _ => Ok(TailStep::Idle),
        }
    }

    /// Decode `chunk` (after any carried bytes) as UTF-8, lossily, keeping an
    /// incomplete trailing sequence for the next chunk.
    fn decode(&mut self, chunk: &[u8]) -> Option<String> {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        if self.skip_continuation {
            while start < self.pending.len().min(3) && self.pending[start] & 0xC0 == 0x80 {
                start += 1;
            }
            if start < self.pending.len() {
                self.skip_continuation = false;
            }
        }
        let complete = start + complete_utf8_prefix(&self.pending[start..]);
        if complete == start {
            self.pending.drain(..start);
            return None;
        }
        let text = String::from_utf8_lossy(&self.pending[start..complete]).into_owned();
        self.pending.drain(..complete);
        Some(text)
    }
}

/// The length of `bytes` without a trailing incomplete UTF-8 sequence (one that
/// more bytes could still complete).
fn complete_utf8_prefix(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // A sequence is at most 4 bytes: look at the last 3 for its lead byte.
    for back in 1..=len.min(3) {
        let b = bytes[len - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { len - back } else { len };
    }
    len
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        for c in &mut self.clients {
            c.flush();
        }
        // Remove the socket only if it is still ours (not replaced by someone
        // who took over the path after us).
        if let Ok(meta) = fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.socket_id
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dir_prefers_an_absolute_xdg_runtime_dir() {
        assert_eq!(
            default_dir_from(Some(OsStr::new("/run/user/1000")), 1000),
            PathBuf::from("/run/user/1000/slotpool")
        );
        assert_eq!(
            default_dir_from(Some(OsStr::new("relative")), 1000),
            PathBuf::from("/tmp/slotpool-1000")
        );
        assert_eq!(default_dir_from(None, 0), PathBuf::from("/tmp/slotpool-0"));
    }

    #[test]
    fn socket_name_is_the_config_stem() {
        assert_eq!(socket_file_name(Path::new("/etc/x/demo.toml")), "demo.sock");
        assert_eq!(socket_file_name(Path::new("")), "slotpool.sock");
    }

    #[test]
    fn incomplete_utf8_tails_are_held_back() {
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(complete_utf8_prefix(b"abc"), 3);
        assert_eq!(complete_utf8_prefix(&euro[..1]), 0);
        assert_eq!(complete_utf8_prefix(&euro[..2]), 0);
        assert_eq!(complete_utf8_prefix(euro), 3);
        let mut s = b"ab".to_vec();
        s.extend_from_slice(&euro[..2]);
        assert_eq!(complete_utf8_prefix(&s), 2);
        // Invalid bytes are not held back forever: they decode lossily.
        assert_eq!(complete_utf8_prefix(&[0xFF]), 1);
        assert_eq!(complete_utf8_prefix(&[0x80, 0x80, 0x80]), 3);
    }

    #[test]
    fn follower_decodes_characters_split_across_chunks() {
        let mut t = TailFollower {
            path: PathBuf::new(),
            file: None,
            id: (0, 0),
            pos: 0,
            follow: true,
            end: 0,
            pending: Vec::new(),
            skip_continuation: true,
            started: true,
            rotated: false,
        };
        let text = "€uro ünïcode";
        let bytes = text.as_bytes();
        // Start mid-character: the leading continuation bytes are skipped.
        let mut out = String::new();
        for chunk in bytes[1..].chunks(1) {
            if let Some(s) = t.decode(chunk) {
                out.push_str(&s);
            }
        }
        assert_eq!(out, "uro ünïcode");
    }
}
