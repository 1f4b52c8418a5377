//! The control protocol: line-delimited JSON over the control socket.
//!
//! Every frame is one JSON object on one line (terminated by `\n`, at most
//! [`MAX_FRAME`] bytes including the newline). A client sends [`Request`]s; the
//! host answers each request with exactly one [`Response`], in order, except for
//! the two streaming verbs:
//!
//! - `events` is answered with [`Response::Subscribed`], then one
//!   [`Response::Event`] per state change until either side closes;
//! - `tail` is answered with [`Response::TailData`] frames; without `follow` the
//!   stream ends with [`Response::TailEnd`] and the host closes the connection,
//!   with `follow` it goes on until either side closes.
//!
//! After a streaming verb the connection accepts no further requests.
//!
//! The wire shape is internally tagged so that it can be typed by hand
//! (`socat - UNIX-CONNECT:$sock` then `{"verb":"status"}`):
//!
//! ```text
//! → {"verb":"start","name":"sine:0"}
//! ← {"type":"done","results":[{"name":"sine:0","ok":true,"message":"started"}]}
//! → {"verb":"set","slot":"gain:0","param":"gain_db","value":-6.0}
//! ← {"type":"error","message":"no slot named 'gain:0' (known: gain, sine)"}
//! ```
//!
//! `status --json` prints a [`StatusReport`] on its own (without the `type` tag):
//! `{"programs":[{"name",…},…],"host":{…}}`. Every field of [`ProgramStatus`] and
//! [`HostStatus`] is always present (absent values are `null`) so that scripts can
//! rely on the key set.
//!
//! Requests are parsed strictly (unknown fields of a verb with arguments are
//! refused, so a typo is an error, not a silent default); responses ignore unknown fields, so a newer
//! host can add fields without breaking an older `slotpool ctl`.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Largest frame (one JSON line including its `\n`) the host accepts from a
/// client. A longer line is answered with an error and the connection is closed.
pub const MAX_FRAME: usize = 64 * 1024;

/// Bytes `tail` shows when the client does not say (supervisorctl's default).
pub const DEFAULT_TAIL_BYTES: u64 = 1600;

/// A request from `slotpool ctl` (or any client) to the host.
///
/// Names (`name`, `slot`) are program names (`sine`, every instance), instance
/// names (`sine:0`) or `all` where the verb allows it; see [`Target::parse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The status of every program instance and of the host.
    Status,
    /// Start a program, one instance, or `all`.
    Start {
        /// `NAME`, `NAME:i` or `all`.
        name: String,
    },
    /// Stop a program, one instance, or `all`.
    Stop {
        /// `NAME`, `NAME:i` or `all`.
        name: String,
    },
    /// Stop then start a program, one instance, or `all`.
    Restart {
        /// `NAME`, `NAME:i` or `all`.
        name: String,
    },
    /// Re-read the configuration and apply the difference (same as SIGHUP).
    Reload,
    /// Stop everything in order and exit the host (same as SIGTERM).
    Shutdown,
    /// Set one parameter of a slot (every instance for `NAME`, one for `NAME:i`).
    Set {
        /// `NAME` or `NAME:i` of a slot program.
        slot: String,
        /// The parameter's name as the module declares it.
        param: String,
        /// The new value.
        value: f64,
    },
    /// Show the end of an instance's log, and optionally follow it.
    Tail {
        /// `NAME:i`, or `NAME` when the program has a single instance.
        name: String,
        /// Which of the instance's logs.
        #[serde(default)]
        stream: LogStream,
        /// Keep streaming what is appended (survives log rotation).
        #[serde(default)]
        follow: bool,
        /// How many bytes from the end to show first.
        #[serde(default = "default_tail_bytes")]
        bytes: u64,
    },
    /// Subscribe to state changes ([`StateEvent`]), streamed until the client
    /// closes. Served by the control server itself; a [`ControlHandler`] never
    /// sees it.
    ///
    /// [`ControlHandler`]: super::ControlHandler
    Events,
}

fn default_tail_bytes() -> u64 {
    DEFAULT_TAIL_BYTES
}

impl Request {
    /// The verb as the user types it (`status`, `start`, …), for logs and errors.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Start { .. } => "start",
            Request::Stop { .. } => "stop",
            Request::Restart { .. } => "restart",
            Request::Reload => "reload",
            Request::Shutdown => "shutdown",
            Request::Set { .. } => "set",
            Request::Tail { .. } => "tail",
            Request::Events => "events",
        }
    }
}

/// One of an instance's two logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// The instance's standard output.
    #[default]
    Stdout,
    /// The instance's standard error.
    Stderr,
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        })
    }
}

/// The host's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The request was carried out (or attempted) per target; `start all`
    /// gives one result per instance. Any `ok: false` makes `slotpool ctl`
    /// exit with 1.
    Done {
        /// One entry per instance (or one for the whole host: reload, shutdown).
        results: Vec<ActionResult>,
    },
    /// The request was refused as a whole (unknown name, malformed frame, peer
    /// not allowed, …). The message says what was wrong and what to do.
    Error {
        /// Human-readable, one line.
        message: String,
    },
    /// Answer to [`Request::Status`].
    Status(StatusReport),
    /// Handler → server only: the answer to [`Request::Tail`] is the path of the
    /// log file. The server reads and follows the file itself and sends
    /// [`Response::TailData`] frames to the client; `Log` never goes on the wire
    /// to a client.
    Log {
        /// The log file of the requested instance and stream.
        path: PathBuf,
    },
    /// A piece of a log file (lossily decoded as UTF-8, never split inside a
    /// character).
    TailData {
        /// The bytes, decoded.
        data: String,
    },
    /// The end of a non-following `tail`; the host closes the connection next.
    TailEnd,
    /// Answer to [`Request::Events`]: events follow.
    Subscribed,
    /// One state change, streamed to `events` subscribers.
    Event(StateEvent),
}

impl Response {
    /// A [`Response::Error`] with `message`.
    pub fn error(message: impl Into<String>) -> Response {
        Response::Error {
            message: message.into(),
        }
    }

    /// A [`Response::Done`] with one successful result.
    pub fn done(name: impl Into<String>, message: impl Into<String>) -> Response {
        Response::Done {
            results: vec![ActionResult::ok(name, message)],
        }
    }
}

/// The outcome of a verb for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The instance (`sine:0`), program, or `host` for host-wide verbs.
    pub name: String,
    /// Whether it worked.
    pub ok: bool,
    /// What happened (`started`, `ERROR (already started)`, …).
    pub message: String,
}

impl ActionResult {
    /// A successful result.
    pub fn ok(name: impl Into<String>, message: impl Into<String>) -> ActionResult {
        ActionResult {
            name: name.into(),
            ok: true,
            message: message.into(),
        }
    }

    /// A failed result.
    pub fn failed(name: impl Into<String>, message: impl Into<String>) -> ActionResult {
        ActionResult {
            name: name.into(),
            ok: false,
            message: message.into(),
        }
    }
}

/// supervisord's process states, with its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProgramState {
    /// Not running, not asked to run.
    Stopped,
    /// Spawned; not yet up for `startsecs`.
    Starting,
    /// Up for at least `startsecs`.
    Running,
    /// Exited during STARTING; waiting before the next attempt.
    Backoff,
    /// Stop signal sent; waiting for the exit.
    Stopping,
    /// Exited from RUNNING (expectedly or not).
    Exited,
    /// Could not be started (startretries exhausted, crash loop, spawn error).
    Fatal,
}

impl ProgramState {
    /// Every state, in supervisord's order.
    pub const ALL: [ProgramState; 7] = [
        ProgramState::Stopped,
        ProgramState::Starting,
        ProgramState::Running,
        ProgramState::Backoff,
        ProgramState::Stopping,
        ProgramState::Exited,
        ProgramState::Fatal,
    ];

    /// The upper-case name (`RUNNING`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramState::Stopped => "STOPPED",
            ProgramState::Starting => "STARTING",
            ProgramState::Running => "RUNNING",
            ProgramState::Backoff => "BACKOFF",
            ProgramState::Stopping => "STOPPING",
            ProgramState::Exited => "EXITED",
            ProgramState::Fatal => "FATAL",
        }
    }
}

impl fmt::Display for ProgramState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an instance's last process ended. Tells exit, crash, hang and quarantine apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited by itself with `code`.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// It was killed by a signal it did not get from the host's stop (a crash).
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The host killed it because its heartbeat stopped advancing.
    Hung,
    /// The host killed it because it broke its region's rings (the slot was quarantined).
    Quarantined,
    /// It never ran: exec failed.
    SpawnFailed {
        /// What went wrong (`No such file or directory (os error 2)`…).
        error: String,
    },
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited { code } => write!(f, "exit status {code}"),
            ExitStatus::Signaled { signal } => match signal_name(*signal) {
                Some(name) => write!(f, "killed by {name}"),
                None => write!(f, "killed by signal {signal}"),
            },
            ExitStatus::Hung => f.write_str("killed: hung (heartbeat stopped)"),
            ExitStatus::Quarantined => f.write_str("killed: quarantined (broke its rings)"),
            ExitStatus::SpawnFailed { error } => write!(f, "spawn error: {error}"),
        }
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    nix::sys::signal::Signal::try_from(signal)
        .ok()
        .map(|s| s.as_str())
}

/// Which mechanism enforces a resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMechanism {
    /// A cgroup v2 controller file (`memory.max`, `cpu.max`).
    Cgroup,
    /// A setrlimit(2) limit (`RLIMIT_AS`, `RLIMIT_CPU`…).
    Rlimit,
    /// Configured but not enforced (neither mechanism was available).
    None,
}

/// One configured limit and how it is enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitStatus {
    /// The value as configured (`"512M"`, `"50%"`).
    pub requested: String,
    /// How it is enforced.
    pub applied_via: LimitMechanism,
    /// Detail or warning (`"cgroup not writable: …; fell back to RLIMIT_AS"`).
    pub note: Option<String>,
}

/// The resource limits of a program (`null` when not configured).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// `memory_max`.
    pub memory_max: Option<LimitStatus>,
    /// `cpu_max`.
    pub cpu_max: Option<LimitStatus>,
}

/// The status of one program instance (`name:i`, or `name` when numprocs = 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramStatus {
    /// Instance name.
    pub name: String,
    /// supervisord state.
    pub state: ProgramState,
    /// The live process, if any.
    pub pid: Option<u32>,
    /// Seconds since the live process was spawned.
    pub uptime_s: Option<u64>,
    /// How many times the host has respawned it (any reason).
    pub restarts: u64,
    /// Unexpected exits and deaths by signal.
    pub crashes: u64,
    /// Kills for a stalled heartbeat.
    pub hangs: u64,
    /// Blocks that missed their deadline (slots only; 0 for plain programs).
    pub late_blocks: u64,
    /// Process time of the last block as a share of the block budget
    /// (`0.25` = 25 %); `null` for plain programs.
    pub load: Option<f64>,
    /// Open file descriptors of the live process.
    pub fds: Option<u32>,
    /// How the last process ended.
    pub exit_status: Option<ExitStatus>,
    /// Resource limits and how they are enforced.
    pub limits: Limits,
    /// supervisord-like one-line description; empty means "derive it from the
    /// other fields" ([`ProgramStatus::describe`]).
    pub description: String,
    /// Process time of the last block in microseconds (slots only).
    pub process_time_us: Option<f64>,
    /// Milliseconds since the worker's heartbeat last advanced (slots only).
    pub heartbeat_age_ms: Option<f64>,
    /// Where the slot stands in the audio engine: `up` (its blocks are used),
    /// `down` (on its fallback, waiting for a worker), `quarantined` (its worker broke
    /// the ring), `vacant`; `null` for plain programs or without an engine.
    #[serde(default)]
    pub link: Option<String>,
    /// Blocks the engine replaced by the slot's fallback (late, down or quarantined).
    #[serde(default)]
    pub fallback_blocks: Option<u64>,
    /// Workers killed because the engine quarantined the slot.
    #[serde(default)]
    pub quarantines: Option<u64>,
    /// The pid of the slot's parked standby worker (`standby = true`), if one is up.
    #[serde(default)]
    pub standby_pid: Option<u32>,
    /// How the live slot worker is scheduled: `SCHED_FIFO 69, RLIMIT_RTTIME 200/400 ms`,
    /// or `off (…)` / `off: SCHED_FIFO 69 refused: …` with the reason; `null` for plain
    /// programs and slots without a live worker.
    #[serde(default)]
    pub realtime: Option<String>,
    /// The slot's pre-wake window in µs (`prewake_us`; 0: off); `null` for plain programs.
    #[serde(default)]
    pub prewake_us: Option<u32>,
    /// Doorbell rings of the engine for this slot, and how many of them found the worker
    /// asleep and had to wake it (the rest found it awake: pre-wake, or still busy).
    #[serde(default)]
    pub rings: Option<u64>,
    /// See `rings`.
    #[serde(default)]
    pub rings_woke: Option<u64>,
}

impl ProgramStatus {
    /// A status with only the name and state set; the rest zero or `null`.
    pub fn new(name: impl Into<String>, state: ProgramState) -> ProgramStatus {
        ProgramStatus {
            name: name.into(),
            state,
            pid: None,
            uptime_s: None,
            restarts: 0,
            crashes: 0,
            hangs: 0,
            late_blocks: 0,
            load: None,
            fds: None,
            exit_status: None,
            limits: Limits::default(),
            description: String::new(),
            process_time_us: None,
            heartbeat_age_ms: None,
            link: None,
            fallback_blocks: None,
            prewake_us: None,
            rings: None,
            rings_woke: None,
            quarantines: None,
            standby_pid: None,
            realtime: None,
        }
    }

    /// The description to show: `description` when the host set one, else a
    /// supervisord-like one derived from state, pid, uptime and exit status
    /// (`pid 123, uptime 0:01:02`, `Exited too quickly (process log may have
    /// details)`).
    pub fn describe(&self) -> String {
        if !self.description.is_empty() {
            return self.description.clone();
        }
        match self.state {
            ProgramState::Running | ProgramState::Starting | ProgramState::Stopping => {
                match (self.pid, self.uptime_s) {
                    (Some(pid), Some(up)) => format!("pid {pid}, uptime {}", format_uptime(up)),
                    (Some(pid), None) => format!("pid {pid}"),
                    _ => String::new(),
                }
            }
            ProgramState::Backoff => match &self.exit_status {
                Some(ExitStatus::SpawnFailed { error }) => format!("spawn error: {error}"),
                _ => "Exited too quickly (process log may have details)".to_owned(),
            },
            ProgramState::Fatal => match &self.exit_status {
                Some(ExitStatus::SpawnFailed { error }) => format!("spawn error: {error}"),
                _ => "Exited too quickly (process log may have details)".to_owned(),
            },
            ProgramState::Exited => match &self.exit_status {
                Some(status) => status.to_string(),
                None => "exited".to_owned(),
            },
            ProgramState::Stopped => match &self.exit_status {
                Some(_) => "Stopped".to_owned(),
                None => "Not started".to_owned(),
            },
        }
    }
}

/// Cycle-time percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest seen.
    pub max: f64,
}

/// Host-wide status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The host's pid.
    pub pid: u32,
    /// Seconds since the host started.
    pub uptime_s: u64,
    /// The host's own open file descriptors.
    pub fds: Option<u32>,
    /// The configuration file in use.
    pub config: PathBuf,
    /// The audio backend in use (`cpal`, `null`, `offline`), once the engine runs.
    pub backend: Option<String>,
    /// Cycle time percentiles, once the engine runs.
    pub cycle_time_us: Option<Percentiles>,
    /// Device over/underruns, once the engine runs.
    pub device_xruns: Option<u64>,
    /// Scheduling of the audio thread (`SCHED_FIFO 70`, or why it was refused).
    #[serde(default)]
    pub realtime: Option<String>,
    /// The host's version (`CARGO_PKG_VERSION`).
    pub version: String,
}

/// `status`: every instance in configuration order, and the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// One entry per instance.
    pub programs: Vec<ProgramStatus>,
    /// The host.
    pub host: HostStatus,
}

/// One state change of one instance, as streamed to `events` subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEvent {
    /// Instance name.
    pub name: String,
    /// State before.
    pub from: ProgramState,
    /// State after.
    pub to: ProgramState,
    /// Wall-clock time of the change, seconds since the Unix epoch.
    pub at: f64,
    /// The process concerned, if any (the new one for STARTING, the old one
    /// for EXITED/BACKOFF).
    pub pid: Option<u32>,
    /// How the process ended, for transitions caused by an exit.
    pub exit_status: Option<ExitStatus>,
    /// Why, in words (`stop requested`, `crash loop: 10 exits in 60 s`), if known.
    pub message: Option<String>,
}

impl StateEvent {
    /// An event stamped with the current wall-clock time.
    pub fn now(name: impl Into<String>, from: ProgramState, to: ProgramState) -> StateEvent {
        StateEvent {
            name: name.into(),
            from,
            to,
            at: unix_time(SystemTime::now()),
            pid: None,
            exit_status: None,
            message: None,
        }
    }
}

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_time(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// `H:MM:SS`, or `N days, H:MM:SS` past a day, as supervisorctl prints uptime.
pub fn format_uptime(seconds: u64) -> String {
    let days = seconds / 86_400;
    let h = (seconds % 86_400) / 3600;
    let m = (seconds % 3600) / 60;
    let s = seconds % 60;
    match days {
        0 => format!("{h}:{m:02}:{s:02}"),
        1 => format!("1 day, {h}:{m:02}:{s:02}"),
        _ => format!("{days} days, {h}:{m:02}:{s:02}"),
    }
}

/// A parsed `NAME | NAME:i | all` argument, for handlers to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `all`: every instance.
    All,
    /// `NAME`: every instance of the program.
    Program(&'a str),
    /// `NAME:i`: one instance.
    Instance(&'a str, u32),
}

/// Why a target argument could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The argument was empty.
    #[error("empty name: give NAME, NAME:i or all")]
    Empty,
    /// `NAME:` followed by something that is not an instance number.
    #[error("'{0}': the part after ':' must be an instance number (NAME:0, NAME:1, …)")]
    BadIndex(String),
}

impl<'a> Target<'a> {
    /// Parse `all`, `NAME` or `NAME:i` (the last `:` splits).
    pub fn parse(s: &'a str) -> Result<Target<'a>, TargetError> {
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        if s == "all" {
            return Ok(Target::All);
        }
        match s.rsplit_once(':') {
            None => Ok(Target::Program(s)),
            Some((name, index)) => {
                if name.is_empty() {
                    return Err(TargetError::Empty);
                }
                let i = index
                    .parse::<u32>()
                    .map_err(|_| TargetError::BadIndex(s.to_owned()))?;
                Ok(Target::Instance(name, i))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(r: Request) {
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        let back: Request = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }

    fn round_trip_response(r: Response) {
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        let back: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }

    fn sample_status() -> StatusReport {
        let mut p = ProgramStatus::new("sine:0", ProgramState::Running);
        p.pid = Some(1234);
        p.uptime_s = Some(62);
        p.restarts = 2;
        p.crashes = 1;
        p.hangs = 1;
        p.late_blocks = 7;
        p.load = Some(0.25);
        p.fds = Some(9);
        p.exit_status = Some(ExitStatus::Signaled { signal: 9 });
        p.limits.memory_max = Some(LimitStatus {
            requested: "512M".into(),
            applied_via: LimitMechanism::Rlimit,
            note: Some("no writable cgroup".into()),
        });
        StatusReport {
            programs: vec![p, ProgramStatus::new("logger", ProgramState::Fatal)],
            host: HostStatus {
                pid: 1,
                uptime_s: 10,
                fds: Some(12),
                config: PathBuf::from("/etc/slotpool/demo.toml"),
                backend: None,
                cycle_time_us: Some(Percentiles {
                    p50: 100.0,
                    p90: 150.0,
                    p99: 300.0,
                    max: 900.0,
                }),
                device_xruns: Some(0),
                realtime: None,
                version: "0.1.0".into(),
            },
        }
    }

    #[test]
    fn every_request_round_trips() {
        for r in [
            Request::Status,
            Request::Start { name: "all".into() },
            Request::Stop {
                name: "sine:1".into(),
            },
            Request::Restart {
                name: "sine".into(),
            },
            Request::Reload,
            Request::Shutdown,
            Request::Set {
                slot: "gain:0".into(),
                param: "gain_db".into(),
                value: -6.5,
            },
            Request::Tail {
                name: "sine:0".into(),
                stream: LogStream::Stderr,
                follow: true,
                bytes: 10,
            },
            Request::Events,
        ] {
            round_trip_request(r);
        }
    }

    #[test]
    fn every_response_round_trips() {
        for r in [
            Response::done("sine:0", "started"),
            Response::Done {
                results: vec![ActionResult::failed("x", "ERROR (no such process)")],
            },
            Response::error("bad"),
            Response::Status(sample_status()),
            Response::Log {
                path: "/var/log/x.log".into(),
            },
            Response::TailData {
                data: "line\n\u{fffd}".into(),
            },
            Response::TailEnd,
            Response::Subscribed,
            Response::Event(StateEvent {
                name: "sine:0".into(),
                from: ProgramState::Running,
                to: ProgramState::Exited,
                at: 1.5,
                pid: Some(3),
                exit_status: Some(ExitStatus::Hung),
                message: Some("hang".into()),
            }),
        ] {
            round_trip_response(r);
        }
    }

    #[test]
    fn requests_have_the_documented_wire_shape() {
        let r: Request = serde_json::from_str(r#"{"verb":"start","name":"sine:0"}"#).unwrap();
        assert_eq!(
            r,
            Request::Start {
                name: "sine:0".into()
            }
        );
        let r: Request = serde_json::from_str(r#"{"verb":"tail","name":"x"}"#).unwrap();
        assert_eq!(
            r,
            Request::Tail {
                name: "x".into(),
                stream: LogStream::Stdout,
                follow: false,
                bytes: DEFAULT_TAIL_BYTES
            }
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"verb":"start","name":"a","follow":true}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"verb":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"verb":"start"}"#).is_err());
    }

    #[test]
    fn status_report_has_exactly_the_documented_keys() {
        let line = serde_json::to_string(&sample_status()).unwrap();
        assert!(line.starts_with(r#"{"programs":[{"name":"sine:0","state":"RUNNING","#));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        top.sort_unstable();
        assert_eq!(top, ["host", "programs"]);
        let p = v["programs"][1].as_object().unwrap();
        for key in [
            "name",
            "state",
            "pid",
            "uptime_s",
            "restarts",
            "crashes",
            "hangs",
            "late_blocks",
            "load",
            "fds",
            "exit_status",
            "limits",
        ] {
            assert!(p.contains_key(key), "missing key {key} in {p:?}");
        }
        assert_eq!(p["state"], "FATAL");
        assert!(p["pid"].is_null());
        assert_eq!(v["programs"][0]["exit_status"]["kind"], "signaled");
    }

    #[test]
    fn describe_follows_supervisord() {
        let mut p = ProgramStatus::new("a", ProgramState::Running);
        p.pid = Some(123);
        p.uptime_s = Some(62);
        assert_eq!(p.describe(), "pid 123, uptime 0:01:02");
        p.state = ProgramState::Backoff;
        assert_eq!(
            p.describe(),
            "Exited too quickly (process log may have details)"
        );
        p.state = ProgramState::Exited;
        p.exit_status = Some(ExitStatus::Signaled { signal: 11 });
        assert_eq!(p.describe(), "killed by SIGSEGV");
        p.description = "crash loop".into();
        assert_eq!(p.describe(), "crash loop");
        assert_eq!(
            ProgramStatus::new("b", ProgramState::Stopped).describe(),
            "Not started"
        );
    }

    #[test]
    fn uptime_formats_like_supervisorctl() {
        assert_eq!(format_uptime(0), "0:00:00");
        assert_eq!(format_uptime(3661), "1:01:01");
        assert_eq!(format_uptime(86_400 + 5), "1 day, 0:00:05");
        assert_eq!(format_uptime(3 * 86_400), "3 days, 0:00:00");
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("all"), Ok(Target::All));
        assert_eq!(Target::parse("sine"), Ok(Target::Program("sine")));
        assert_eq!(Target::parse("sine:2"), Ok(Target::Instance("sine", 2)));
        assert_eq!(Target::parse(""), Err(TargetError::Empty));
        assert_eq!(Target::parse(":1"), Err(TargetError::Empty));
        assert!(matches!(
            Target::parse("sine:x"),
            Err(TargetError::BadIndex(_))
        ));
    }
}
