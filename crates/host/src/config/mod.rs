//! The configuration file: one TOML file with `[engine]`, `[control]`, `[supervisor]`,
//! `[program.NAME]` and `[[route]]`.
//!
//! Loading happens in two layers: [`raw`] deserializes the text as written (unknown keys
//! refused, every value spanned), then [`validate`] checks it as a whole and produces the
//! plain [`Config`] the rest of the host uses. Every problem becomes a [`ConfigError`] that
//! names file, line and key and says what was expected; a config with any error is never
//! used, so nothing starts.

mod error;
mod raw;
mod validate;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};
pub use values::{AutoRestart, ByteSize, CpuPercent, SignalName, WorkerRealtime};

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Absolute path of the file it was read from.
    pub path: PathBuf,
    /// The file's stem (`demo` for `demo.toml`): names the log directory and the socket.
    pub name: String,
    /// `[engine]`.
    pub engine: EngineConfig,
    /// `[control]`.
    pub control: ControlConfig,
    /// `[supervisor]`.
    pub supervisor: SupervisorConfig,
    /// `[program.NAME]` tables in the order they appear in the file.
    pub programs: Vec<ProgramConfig>,
    /// `[[route]]` entries in file order.
    pub routes: Vec<RouteConfig>,
}

/// `[engine]`: the audio cycle (used by the engine; parsed and checked now).
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Frames per second (default 48000).
    pub sample_rate: u32,
    /// Frames per block (default 128).
    pub block_frames: u32,
    /// Channels of the device and of every slot (default 2).
    pub channels: u32,
    /// Audio backend (default `auto`).
    pub backend: Backend,
    /// Device name for `cpal` (default: the system default).
    pub device: Option<String>,
    /// Share of the block period a sync slot may take before it is late (default 0.75).
    pub deadline: f64,
    /// SCHED_FIFO priority of the audio thread, `None` for normal scheduling.
    pub realtime: Option<u8>,
    /// How slot workers are scheduled (default: one below the audio thread).
    pub worker_realtime: WorkerRealtime,
    /// Microseconds the audio thread polls for a worker's block before it sleeps on
    /// the futex (default 100; 0 sleeps at once).
    pub wait_spin_us: u32,
    /// Slot workers' pre-wake window in microseconds (default 0: off): a worker wakes
    /// this long before the host's next expected ring and polls for it, so the ring
    /// finds it running. A slot's own `prewake_us` overrides it.
    pub worker_prewake_us: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            sample_rate: 48_000,
            block_frames: 128,
            channels: 2,
            backend: Backend::Auto,
            device: None,
            deadline: 0.75,
            realtime: None,
            worker_realtime: WorkerRealtime::BelowAudio,
            wait_spin_us: 100,
            worker_prewake_us: 0,
        }
    }
}

/// `[engine] backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The device if one opens, else `null`.
    Auto,
    /// A real device through cpal.
    Cpal,
    /// A real-time clock thread that discards the output.
    Null,
    /// No clock: render as fast as the workers go.
    Offline,
}

/// `[control]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlConfig {
    /// The control socket; `None` means the control module's default for this config.
    pub socket: Option<PathBuf>,
}

/// `[supervisor]`: host-wide supervision settings (slotpool's own section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// Global cap on process spawns per second, over all programs (default 20).
    pub spawn_rate: u32,
    /// Spawns allowed at once before the rate applies (default 50).
    pub spawn_burst: u32,
    /// Directory of `AUTO` log files; `None` means [`Config::default_log_dir`].
    pub log_dir: Option<PathBuf>,
    /// Warn when an instance's open fd count keeps growing past this (default 256).
    pub fd_warn: u32,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            spawn_rate: 20,
            spawn_burst: 50,
            log_dir: None,
            fd_warn: 256,
        }
    }
}

/// How an instance is launched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// Exec `program` (looked up in PATH when it has no slash) with `args`.
    Command {
        /// The executable.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// The built-in worker binary `slotpool-worker --module NAME --param k=v …`.
    Module(String),
}

/// `[program.NAME]`: one supervised program with `numprocs` instances.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramConfig {
    /// The table's name.
    pub name: String,
    /// What to exec.
    pub launch: Launch,
    /// `Some` for a slot (it has a `module`, or it is named by a route).
    pub slot: Option<SlotConfig>,
    /// Instances `name:0` … `name:numprocs-1` (default 1).
    pub numprocs: u32,
    /// Lower starts first and stops last (default 999, as in supervisord).
    pub priority: i32,
    /// Start when the host starts (default true).
    pub autostart: bool,
    /// When to restart after an exit (default unexpected).
    pub autorestart: AutoRestart,
    /// Exit codes that count as expected (default `[0]`).
    pub exitcodes: Vec<i32>,
    /// Seconds a fresh process must stay up to count as RUNNING (default 1).
    pub startsecs: Duration,
    /// Failed starts in a row allowed before FATAL (default 3).
    pub startretries: u32,
    /// Signal that asks the program to stop (default TERM).
    pub stopsignal: i32,
    /// Seconds between the stop signal and SIGKILL to the process group (default 10).
    pub stopwaitsecs: Duration,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the host's).
    pub workingdir: Option<PathBuf>,
    /// File mode creation mask (default: the host's).
    pub umask: Option<u32>,
    /// Where standard output goes.
    pub stdout: LogConfig,
    /// Where standard error goes.
    pub stderr: LogConfig,
    /// Memory limit in bytes.
    pub memory_max: Option<u64>,
    /// CPU limit in percent of one CPU.
    pub cpu_max: Option<u32>,
    /// Crash-loop breaker: this many unexpected exits after RUNNING … (default 10)
    pub crashloop_exits: u32,
    /// … within this window make the program FATAL (default 60 s).
    pub crashloop_window: Duration,
    /// First interval of the FATAL re-probe timer, `None` to stay FATAL.
    pub fatal_retry: Option<Duration>,
}

/// Slot-only settings of a program.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotConfig {
    /// Built-in module for the worker, `None` for a custom worker `command`.
    pub module: Option<String>,
    /// Initial parameter values.
    pub params: BTreeMap<String, f64>,
    /// sync (same cycle) or async (one block of latency).
    pub mode: SlotMode,
    /// What the slot outputs when late or down.
    pub fallback: Fallback,
    /// How long the worker heartbeat may stand still before the worker counts as hung.
    pub hang_timeout: Duration,
    /// Keep a second worker started and parked (a hot standby): when the worker dies or
    /// hangs, the standby takes the slot over without an exec on the way.
    pub standby: bool,
    /// This slot's worker scheduling (`realtime = true | false | <priority>`), over
    /// `[engine] worker_realtime`; `None`: the engine's.
    pub realtime: Option<WorkerRealtime>,
    /// This slot's pre-wake window in µs, over `[engine] worker_prewake_us`; `None`:
    /// the engine's.
    pub prewake_us: Option<u32>,
}

/// `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotMode {
    /// Output in the same cycle, bounded by the deadline.
    Sync,
    /// One block of added latency.
    Async,
}

/// `fallback`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Output zeros.
    Silence,
    /// Pass the input through.
    Bypass,
    /// Repeat the last good block.
    Hold,
}

/// The default `hang_timeout`.
pub const DEFAULT_HANG_TIMEOUT: Duration = Duration::from_millis(500);

/// One output stream's log settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Where it goes.
    pub target: LogTarget,
    /// Rotate when the file reaches this size; 0 never rotates (default 50MB).
    pub maxbytes: u64,
    /// Rotated files kept, `name.log.1` … (default 10).
    pub backups: u32,
}

/// `stdout` / `stderr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// A file in the config's log directory.
    Auto,
    /// Discarded (the child gets /dev/null directly).
    Null,
    /// A file; may contain `%(process_num)d`, `%(program_name)s`, `%(process_name)s`.
    File(PathBuf),
}

/// Which output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `"stdout"` or `"stderr"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// `[[route]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// Source.
    pub from: Endpoint,
    /// Destination.
    pub to: Endpoint,
    /// Linear gain (default 1.0).
    pub gain: f64,
    /// (from channel, to channel) pairs; empty means channel i → channel i.
    pub channels: Vec<(u32, u32)>,
}

/// A node of the patch: the device input, the device output, or one slot instance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// The device input.
    Input,
    /// The device output.
    Output,
    /// `program:index`.
    Slot {
        /// Program name.
        program: String,
        /// Instance index.
        index: u32,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Input => f.write_str("input"),
            Endpoint::Output => f.write_str("output"),
            Endpoint::Slot { program, index } => write!(f, "{program}:{index}"),
        }
    }
}

impl Config {
    /// Reads and validates `path`. On any problem returns all problems found; nothing of a
    /// config with errors is ever used.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                key: String::new(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        Config::parse(&text, path)
    }

    /// Validates `text` as if read from `path` (relative paths in it resolve against the
    /// directory of `path`).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        validate::parse(text, path)
    }

    /// `$XDG_STATE_HOME/slotpool/<name>/`, else `~/.local/state/slotpool/<name>/`, else
    /// `/tmp/slotpool-<uid>/<name>/logs/`: where `AUTO` logs go unless `[supervisor] log_dir`
    /// says otherwise.
    pub fn default_log_dir(&self) -> PathBuf {
        let env_dir = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(state) = env_dir("XDG_STATE_HOME") {
            return state.join("slotpool").join(&self.name);
        }
        if let Some(home) = env_dir("HOME") {
            return home.join(".local/state/slotpool").join(&self.name);
        }
        let uid = nix::unistd::getuid();
        PathBuf::from(format!("/tmp/slotpool-{uid}"))
            .join(&self.name)
            .join("logs")
    }

    /// The directory `AUTO` logs go to.
    pub fn log_dir(&self) -> PathBuf {
        self.supervisor
            .log_dir
            .clone()
            .unwrap_or_else(|| self.default_log_dir())
    }

    /// The program called `name`.
    pub fn program(&self, name: &str) -> Option<&ProgramConfig> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The pre-wake window of `program`'s workers in µs: the slot's `prewake_us`, else
    /// `[engine] worker_prewake_us`; 0 for plain programs (nothing rings them).
    pub fn prewake_us(&self, program: &ProgramConfig) -> u32 {
        program
            .slot
            .as_ref()
            .map_or(0, |s| s.prewake_us.unwrap_or(self.engine.worker_prewake_us))
    }
}

impl ProgramConfig {
    /// Instance names `name:0` … `name:numprocs-1`.
    pub fn instance_names(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.numprocs).map(move |i| format!("{}:{i}", self.name))
    }

    /// Whether `code` is an expected exit code.
    pub fn expected_exit(&self, code: i32) -> bool {
        self.exitcodes.contains(&code)
    }

    /// The log file of instance `index` for `stream`, `None` when discarded.
    pub fn log_path(&self, stream: Stream, index: u32, log_dir: &Path) -> Option<PathBuf> {
        let cfg = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        match &cfg.target {
            LogTarget::Null => None,
            LogTarget::Auto => {
                Some(log_dir.join(format!("{}_{index}.{}.log", self.name, stream.as_str())))
            }
            LogTarget::File(template) => {
                let t = template.to_string_lossy();
                let expanded = t
                    .replace("%(process_num)d", &index.to_string())
                    .replace("%(program_name)s", &self.name)
                    .replace("%(process_name)s", &format!("{}_{index}", self.name));
                Some(PathBuf::from(expanded))
            }
        }
    }

    /// The `LogConfig` of `stream`.
    pub fn log(&self, stream: Stream) -> &LogConfig {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }
}

/// Splits a supervisord-style `command` string into words: whitespace separates words,
/// single quotes keep everything literally, double quotes allow `\"` and `\\`, a backslash
/// outside quotes escapes the next character.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("a single quote is not closed".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("a double quote is not closed".into()),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("a double quote is not closed".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(x) => {
                    in_word = true;
                    cur.push(x);
                }
                None => return Err("the command ends with a lone backslash".into()),
            },
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests;
