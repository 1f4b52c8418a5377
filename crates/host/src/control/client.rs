//! `slotpool ctl`: the control client, supervisorctl-style.
//!
//! ```text
//! slotpool ctl [--socket PATH | --config CONFIG] [VERB ARGS…]
//!   status [NAME…] [--json]    table of programs (or the StatusReport JSON)
//!   start|stop|restart NAME…   NAME, NAME:i or all
//!   reload | shutdown
//!   set SLOT PARAM VALUE
//!   tail NAME [-f] [--stderr] [--bytes N]
//!   events                     state changes as JSON lines, until the host exits
//! ```
//!
//! With no verb, an interactive shell (`slotpool> ` prompt, line editing and
//! history, `help`, `help VERB`, `quit`). In the shell, Ctrl-C stops a
//! `tail -f` or `events` and returns to the prompt.
//!
//! The socket is found in this order: `--socket`; the path derived from
//! `--config` ([`super::server::default_path`]); `$SLOTPOOL_SOCKET`; the only
//! socket in the default directory ([`super::server::default_dir`]).
//!
//! # Exit status
//!
//! Decided in one place ([`Failure::exit_code`] and the verbs' outcomes), and
//! printed by `--help`:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the host refused or failed the request (unknown name, a start failed, bad frame) |
//! | 2 | usage: bad arguments, or no socket given and none or several found |
//! | 3 | cannot reach the host: not running, wrong socket, no answer in time, connection lost |
//! | 4 | `status`: at least one program shown is not RUNNING (like supervisorctl's 3) |

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::protocol::{
    DEFAULT_TAIL_BYTES, LogStream, ProgramState, Request, Response, StatusReport, format_uptime,
};
use super::server::{default_dir, default_path};

/// `slotpool ctl`'s exit codes (see the module docs).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The host refused or failed the request.
    pub const FAILED: i32 = 1;
    /// Bad arguments, or the socket could not be chosen.
    pub const USAGE: i32 = 2;
    /// The host could not be reached or stopped answering.
    pub const UNREACHABLE: i32 = 3;
    /// `status`: some program shown is not RUNNING.
    pub const NOT_RUNNING: i32 = 4;
}

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  the host refused or failed the request (unknown name, a start failed, ...)
  2  usage: bad arguments, or no socket given and none or several found
  3  cannot reach the host: not running, wrong socket, no answer in time,
     connection lost
  4  status: at least one program shown is not RUNNING";

/// `slotpool ctl`: talk to a running host over its control socket.
#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct CtlArgs {
    /// The host's control socket [default: from --config, else $SLOTPOOL_SOCKET,
    /// else the only socket in $XDG_RUNTIME_DIR/slotpool or /tmp/slotpool-UID]
    #[arg(short = 's', long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The host's config file; its socket's default path is derived from the name
    #[arg(short = 'c', long, value_name = "CONFIG", conflicts_with = "socket")]
    pub config: Option<PathBuf>,
    /// Seconds to wait for an answer before giving up (exit 3)
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// What to do; without one, an interactive shell
    #[command(subcommand)]
    pub command: Option<CtlCommand>,
}

/// The verbs, shared by the command line and the interactive shell.
#[derive(Debug, Clone, PartialEq, Subcommand)]
pub enum CtlCommand {
    /// Show programs (all, or the NAMEs given) and the host
    Status {
        /// NAME or NAME:i to show (default: all)
        names: Vec<String>,
        /// Print the status report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Start programs (NAME, NAME:i or all)
    Start {
        /// NAME, NAME:i or all
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop programs (NAME, NAME:i or all)
    Stop {
        /// NAME, NAME:i or all
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop then start programs (NAME, NAME:i or all)
    Restart {
        /// NAME, NAME:i or all
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Re-read the config and apply the changes (like SIGHUP)
    Reload,
    /// Stop every program and exit the host (like SIGTERM)
    Shutdown,
    /// Set a slot parameter
    Set {
        /// NAME or NAME:i of a slot
        slot: String,
        /// Parameter name
        param: String,
        /// New value
        #[arg(allow_negative_numbers = true)]
        value: f64,
    },
    /// Show the end of a program's log
    Tail {
        /// NAME:i, or NAME for a single instance
        name: String,
        /// Keep printing what is appended (Ctrl-C to stop)
        #[arg(short = 'f', long)]
        follow: bool,
        /// The stderr log instead of stdout
        #[arg(long)]
        stderr: bool,
        /// How many bytes from the end to show first
        #[arg(short = 'n', long, value_name = "N", default_value_t = DEFAULT_TAIL_BYTES)]
        bytes: u64,
    },
    /// Print state changes as JSON lines until the host exits (Ctrl-C to stop)
    Events,
}

/// One shell line, parsed with the same verbs.
#[derive(Debug, Parser)]
#[command(
    name = "slotpool>",
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_help_flag = true
)]
struct ShellLine {
    #[command(subcommand)]
    command: CtlCommand,
}

/// Why a command could not be carried out; decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The host refused or failed the request.
    Refused(String),
    /// Bad usage or no socket found.
    Usage(String),
    /// The host cannot be reached or stopped answering.
    Unreachable(String),
}

impl Failure {
    /// The exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Refused(_) => exit::FAILED,
            Failure::Usage(_) => exit::USAGE,
            Failure::Unreachable(_) => exit::UNREACHABLE,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Refused(m) | Failure::Usage(m) | Failure::Unreachable(m) => m,
        }
    }
}

/// Run `slotpool ctl` with parsed arguments; returns the exit code.
///
/// Call it from the process's only thread (as `slotpool ctl` does): in the
/// shell, Ctrl-C during `tail -f`/`events` is caught by blocking SIGINT in the
/// calling thread and reading it from a signalfd; in a process with other
/// threads that do not block SIGINT, Ctrl-C ends the process as usual.
pub fn run_ctl(args: CtlArgs) -> i32 {
    let stdout = io::stdout();
    let stderr = io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let socket = match resolve_socket(&args) {
        Ok(socket) => socket,
        Err(f) => {
            let _ = writeln!(err, "slotpool ctl: {}", f.message());
            return f.exit_code();
        }
    };
    let timeout = if args.timeout.is_finite() && args.timeout > 0.0 {
        Duration::from_secs_f64(args.timeout.min(86_400.0))
    } else {
        let _ = writeln!(
            err,
            "slotpool ctl: --timeout {} must be a positive number of seconds",
            args.timeout
        );
        return exit::USAGE;
    };
    let ctl = Ctl { socket, timeout };
    match args.command {
        Some(cmd) => ctl.execute(&cmd, &mut out, &mut err, false),
        None => {
            drop(out);
            drop(err);
            ctl.shell()
        }
    }
}

/// Pick the socket: `--socket`, `--config`, `$SLOTPOOL_SOCKET`, or the only
/// socket in the default directory.
pub fn resolve_socket(args: &CtlArgs) -> Result<PathBuf, Failure> {
    if let Some(socket) = &args.socket {
        return Ok(socket.clone());
    }
    if let Some(config) = &args.config {
        return Ok(default_path(config));
    }
    if let Some(socket) = std::env::var_os("SLOTPOOL_SOCKET").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(socket));
    }
    let dir = default_dir();
    let mut found: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Failure::Unreachable(format!(
            "no slotpool host seems to be running: no socket in {}; start one with `slotpool run CONFIG`, or give --socket PATH or --config CONFIG",
            dir.display()
        ))),
        _ => Err(Failure::Usage(format!(
            "several hosts are running ({}); choose one with --socket PATH or --config CONFIG",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// One connection to the host.
struct Connection {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Connection {
    fn open(socket: &Path, timeout: Duration) -> Result<Connection, Failure> {
        let stream = UnixStream::connect(socket).map_err(|e| {
            Failure::Unreachable(format!(
                "cannot connect to the host at {}: {e}; is `slotpool run` running with this socket?",
                socket.display()
            ))
        })?;
        let setup = |e: io::Error| Failure::Unreachable(format!("{}: {e}", socket.display()));
        stream.set_read_timeout(Some(timeout)).map_err(setup)?;
        stream.set_write_timeout(Some(timeout)).map_err(setup)?;
        let writer = stream.try_clone().map_err(setup)?;
        Ok(Connection {
            socket: socket.to_owned(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn lost(&self, e: &io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Unreachable(format!(
                "the host at {} did not answer in time (--timeout)",
                self.socket.display()
            )),
            _ => Failure::Unreachable(format!(
                "lost the connection to the host at {}: {e}",
                self.socket.display()
            )),
        }
    }

    fn send(&mut self, req: &Request) -> Result<(), Failure> {
        let mut line = serde_json::to_vec(req)
            .map_err(|e| Failure::Refused(format!("cannot encode the request: {e}")))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(|e| self.lost(&e))
    }

    /// The next frame; `None` when the host closed the connection.
    fn recv(&mut self) -> Result<Option<Response>, Failure> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => serde_json::from_str(&line).map(Some).map_err(|e| {
                Failure::Refused(format!(
                    "unexpected answer from the host: {e}: {}",
                    line.trim_end()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(None),
            Err(e) => Err(self.lost(&e)),
        }
    }

    /// The answer to a request; the host closing first is a failure.
    fn answer(&mut self) -> Result<Response, Failure> {
        match self.recv()? {
            Some(Response::Error { message }) => Err(Failure::Refused(message)),
            Some(r) => Ok(r),
            None => Err(Failure::Unreachable(format!(
                "the host at {} closed the connection without answering",
                self.socket.display()
            ))),
        }
    }

    /// Wait until a frame can be read without blocking; with `interrupt`, give
    /// up (returning false) when SIGINT arrives.
    fn wait_frame(&mut self, interrupt: Option<&SignalFd>) -> Result<bool, Failure> {
        if self.reader.buffer().contains(&b'\n') {
            return Ok(true);
        }
        let socket = self.reader.get_ref().as_fd();
        let mut fds = vec![PollFd::new(socket, PollFlags::POLLIN)];
        if let Some(sfd) = interrupt {
            fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
        }
        loop {
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(self.lost(&e.into())),
            }
        }
        if fds
            .get(1)
            .and_then(PollFd::revents)
            .is_some_and(|r| !r.is_empty())
        {
            return Ok(false);
        }
        Ok(true)
    }
}

/// Where the commands go.
struct Ctl {
    socket: PathBuf,
    timeout: Duration,
}

impl Ctl {
    /// Carry out one command, printing to `out`/`err`; returns the exit code.
    /// `interactive`: in the shell, Ctrl-C ends a stream instead of the process.
    fn execute(
        &self,
        cmd: &CtlCommand,
        out: &mut dyn Write,
        err: &mut dyn Write,
        interactive: bool,
    ) -> i32 {
        match self.try_execute(cmd, out, err, interactive) {
            Ok(code) => code,
            Err(f) => {
                let _ = writeln!(err, "slotpool ctl: {}", f.message());
                f.exit_code()
            }
        }
    }

    fn try_execute(
        &self,
        cmd: &CtlCommand,
        out: &mut dyn Write,
        err: &mut dyn Write,
        interactive: bool,
    ) -> Result<i32, Failure> {
        let mut conn = Connection::open(&self.socket, self.timeout)?;
        match cmd {
            CtlCommand::Status { names, json } => {
                conn.send(&Request::Status)?;
                let report = match conn.answer()? {
                    Response::Status(report) => report,
                    other => return Err(unexpected(&other)),
                };
                status(report, names, *json, out, err)
            }
            CtlCommand::Start { names }
            | CtlCommand::Stop { names }
            | CtlCommand::Restart { names } => {
                let requests: Vec<Request> = names
                    .iter()
                    .map(|name| {
                        let name = name.clone();
                        match cmd {
                            CtlCommand::Start { .. } => Request::Start { name },
                            CtlCommand::Stop { .. } => Request::Stop { name },
                            _ => Request::Restart { name },
                        }
                    })
                    .collect();
                actions(&mut conn, &requests, out, err)
            }
            CtlCommand::Reload => actions(&mut conn, &[Request::Reload], out, err),
            CtlCommand::Shutdown => actions(&mut conn, &[Request::Shutdown], out, err),
            CtlCommand::Set { slot, param, value } => {
                let req = Request::Set {
                    slot: slot.clone(),
                    param: param.clone(),
                    value: *value,
                };
                actions(&mut conn, &[req], out, err)
            }
            CtlCommand::Tail {
                name,
                follow,
                stderr,
                bytes,
            } => {
                let req = Request::Tail {
                    name: name.clone(),
                    stream: if *stderr {
                        LogStream::Stderr
                    } else {
                        LogStream::Stdout
                    },
                    follow: *follow,
                    bytes: *bytes,
                };
                conn.send(&req)?;
                stream(&mut conn, *follow, interactive, out)
            }
            CtlCommand::Events => {
                conn.send(&Request::Events)?;
                match conn.answer()? {
                    Response::Subscribed => {}
                    other => return Err(unexpected(&other)),
                }
                stream(&mut conn, true, interactive, out)
            }
        }
    }

    /// The interactive shell; returns the exit code (0 on quit or end of input).
    fn shell(&self) -> i32 {
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(editor) => Some(editor),
            Err(e) => {
                eprintln!("slotpool ctl: no line editing ({e}); reading plain lines");
                None
            }
        };
        let stdout = io::stdout();
        let stderr = io::stderr();
        // supervisorctl greets with the status table.
        let _ = self.execute(
            &CtlCommand::Status {
                names: Vec::new(),
                json: false,
            },
            &mut stdout.lock(),
            &mut stderr.lock(),
            true,
        );
        let stdin = io::stdin();
        loop {
            let line = match editor.as_mut() {
                Some(ed) => match ed.readline("slotpool> ") {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = ed.add_history_entry(line.as_str());
                        }
                        line
                    }
                    // Ctrl-C at the prompt: a fresh prompt, like a shell.
                    Err(rustyline::error::ReadlineError::Interrupted) => continue,
                    Err(rustyline::error::ReadlineError::Eof) => return exit::OK,
                    Err(e) => {
                        eprintln!("slotpool ctl: reading input: {e}");
                        return exit::FAILED;
                    }
                },
                None => {
                    print!("slotpool> ");
                    let _ = io::stdout().flush();
                    let mut line = String::new();
                    match stdin.lock().read_line(&mut line) {
                        Ok(0) => return exit::OK,
                        Ok(_) => line,
                        Err(e) => {
                            eprintln!("slotpool ctl: reading input: {e}");
                            return exit::FAILED;
                        }
                    }
                }
            };
            let words = match split_words(&line) {
                Ok(words) => words,
                Err(e) => {
                    eprintln!("*** {e}");
                    continue;
                }
            };
            let mut out = stdout.lock();
            let mut err = stderr.lock();
            match words.first().map(String::as_str) {
                None => {}
                Some("quit" | "exit") => return exit::OK,
                Some("help") => shell_help(words.get(1).map(String::as_str), &mut out),
                Some(_) => match ShellLine::try_parse_from(&words) {
                    Ok(parsed) => {
                        let _ = self.execute(&parsed.command, &mut out, &mut err, true);
                    }
                    Err(e) => {
                        // clap's first line says what is wrong; its usage and
                        // "--help" hints are for the command line, not the shell.
                        let text = e.render().to_string();
                        let what: Vec<&str> = text
                            .lines()
                            .take_while(|l| !l.trim().is_empty())
                            .map(str::trim)
                            .collect();
                        let _ = writeln!(err, "*** {} (type help for the verbs)", what.join(" "));
                    }
                },
            }
        }
    }
}

fn unexpected(r: &Response) -> Failure {
    Failure::Refused(format!("unexpected answer from the host: {r:?}"))
}

/// Send each request (pipelined), print each result; 1 if any failed.
fn actions(
    conn: &mut Connection,
    requests: &[Request],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, Failure> {
    for req in requests {
        conn.send(req)?;
    }
    let mut code = exit::OK;
    for req in requests {
        match conn.recv()? {
            Some(Response::Done { results }) => {
                for r in results {
                    if r.ok {
                        let _ = writeln!(out, "{}: {}", r.name, r.message);
                    } else {
                        let _ = writeln!(err, "{}: {}", r.name, r.message);
                        code = exit::FAILED;
                    }
                }
            }
            Some(Response::Error { message }) => {
                let _ = writeln!(err, "{}: ERROR ({message})", target_of(req));
                code = exit::FAILED;
            }
            Some(other) => return Err(unexpected(&other)),
            None => {
                // `shutdown` may close before answering if the host exits fast.
                if matches!(req, Request::Shutdown) {
                    let _ = writeln!(out, "host: shut down");
                    return Ok(code);
                }
                return Err(Failure::Unreachable(format!(
                    "the host at {} closed the connection before answering {}",
                    conn.socket.display(),
                    req.verb()
                )));
            }
        }
    }
    Ok(code)
}

fn target_of(req: &Request) -> &str {
    match req {
        Request::Start { name }
        | Request::Stop { name }
        | Request::Restart { name }
        | Request::Tail { name, .. } => name,
        Request::Set { slot, .. } => slot,
        _ => "host",
    }
}

/// Print `tail` data or `events` until the stream ends (or Ctrl-C in the shell).
fn stream(
    conn: &mut Connection,
    endless: bool,
    interactive: bool,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    // Streams have no answer deadline: they wait for what happens next.
    let _ = conn.reader.get_ref().set_read_timeout(None);
    let guard = if interactive && endless {
        SigintCatcher::new()
    } else {
        None
    };
    loop {
        if !conn.wait_frame(guard.as_ref().map(|g| &g.fd))? {
            let _ = writeln!(out);
            return Ok(exit::OK); // Ctrl-C in the shell
        }
        match conn.recv()? {
            Some(Response::TailData { data }) => {
                if out
                    .write_all(data.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return Ok(exit::OK); // stdout closed (| head)
                }
            }
            Some(Response::TailEnd) => return Ok(exit::OK),
            Some(Response::Event(ev)) => {
                let line = serde_json::to_string(&ev)
                    .map_err(|e| Failure::Refused(format!("cannot print an event: {e}")))?;
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return Ok(exit::OK);
                }
            }
            Some(Response::Error { message }) => return Err(Failure::Refused(message)),
            Some(other) => return Err(unexpected(&other)),
            None => {
                return Err(Failure::Unreachable(format!(
                    "the host at {} closed the connection{}",
                    conn.socket.display(),
                    if endless { " (did it shut down?)" } else { "" }
                )));
            }
        }
    }
}

/// While alive, SIGINT is blocked and readable from `fd` instead of killing
/// the process (the shell uses it to end a `tail -f`).
struct SigintCatcher {
    fd: SignalFd,
    mask: SigSet,
}

impl SigintCatcher {
    fn new() -> Option<SigintCatcher> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGINT);
        mask.thread_block().ok()?;
        match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
            Ok(fd) => Some(SigintCatcher { fd, mask }),
            Err(_) => {
                let _ = mask.thread_unblock();
                None
            }
        }
    }
}

impl Drop for SigintCatcher {
    fn drop(&mut self) {
        // Consume a pending SIGINT so that unblocking does not deliver it.
        while let Ok(Some(_)) = self.fd.read_signal() {}
        let _ = self.mask.thread_unblock();
    }
}

/// Print the status table (or JSON) of the programs selected by `names`.
fn status(
    report: StatusReport,
    names: &[String],
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, Failure> {
    let mut code = exit::OK;
    let mut report = report;
    if !names.is_empty() {
        for n in names {
            let prefix = format!("{n}:");
            if !report
                .programs
                .iter()
                .any(|p| &p.name == n || p.name.starts_with(&prefix))
            {
                let _ = writeln!(err, "{n}: ERROR (no such process)");
                code = exit::FAILED;
            }
        }
        report.programs.retain(|p| {
            names
                .iter()
                .any(|n| &p.name == n || p.name.starts_with(&format!("{n}:")))
        });
    }
    if code == exit::OK
        && report
            .programs
            .iter()
            .any(|p| p.state != ProgramState::Running)
    {
        code = exit::NOT_RUNNING;
    }
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::Refused(format!("cannot print the report: {e}")))?;
        let _ = writeln!(out, "{text}");
    } else {
        let _ = out.write_all(status_table(&report).as_bytes());
    }
    Ok(code)
}

/// The `status` table: one row per program, then one line for the host.
pub fn status_table(report: &StatusReport) -> String {
    const HEADER: [&str; 10] = [
        "NAME",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LATE",
        "HANGS",
        "LOAD",
        "FDS",
        "DESCRIPTION",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<[String; 10]> = report
        .programs
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.state.to_string(),
                p.pid.map_or_else(dash, |v| v.to_string()),
                p.uptime_s.map_or_else(dash, format_uptime),
                p.restarts.to_string(),
                p.late_blocks.to_string(),
                p.hangs.to_string(),
                p.load.map_or_else(dash, |l| format!("{:.1}%", l * 100.0)),
                p.fds.map_or_else(dash, |v| v.to_string()),
                p.describe(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut push_row = |cells: &[&str]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    };
    push_row(&HEADER);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        push_row(&cells);
    }
    let h = &report.host;
    let mut host = format!("host: pid {}, uptime {}", h.pid, format_uptime(h.uptime_s));
    if let Some(fds) = h.fds {
        host.push_str(&format!(", fds {fds}"));
    }
    if let Some(c) = &h.cycle_time_us {
        host.push_str(&format!(
            ", cycle p50 {:.0} us p99 {:.0} us max {:.0} us",
            c.p50, c.p99, c.max
        ));
    }
    if let Some(x) = h.device_xruns {
        host.push_str(&format!(", xruns {x}"));
    }
    host.push_str(&format!(", config {}", h.config.display()));
    if let Some(b) = &h.backend {
        host.push_str(&format!("\naudio: {b}"));
        if let Some(rt) = &h.realtime {
            host.push_str(&format!(", realtime {rt}"));
        }
    }
    text.push_str(&host);
    text.push('\n');
    text
}

fn shell_help(verb: Option<&str>, out: &mut dyn Write) {
    let mut cmd = ShellLine::command();
    match verb {
        None => {
            let _ = writeln!(
                out,
                "verbs (help VERB for details; quit or Ctrl-D to leave):"
            );
            for sub in cmd.get_subcommands() {
                let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
                let _ = writeln!(out, "  {:<10} {about}", sub.get_name());
            }
        }
        Some(verb) => match cmd.find_subcommand_mut(verb) {
            Some(sub) => {
                let mut sub = sub.clone().bin_name(verb);
                let _ = writeln!(out, "{}", sub.render_long_help());
            }
            None => {
                let _ = writeln!(out, "*** no verb '{verb}'; type help for the list");
            }
        },
    }
}

/// Split a shell line into words: whitespace separates, single and double
/// quotes group, backslash escapes the next character.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => {
                quote = Some(ch);
                in_word = true;
            }
            (Some('\''), c) => word.push(c),
            (_, '\\') => match chars.next() {
                Some(c) => {
                    word.push(c);
                    in_word = true;
                }
                None => return Err("line ends with a lone backslash".into()),
            },
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlHandler;
    use crate::control::protocol::{HostStatus, ProgramStatus};
    use crate::control::server::ControlServer;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct LogHandler(PathBuf);

    impl ControlHandler for LogHandler {
        fn handle(&mut self, _req: Request) -> Response {
            Response::Log {
                path: self.0.clone(),
            }
        }
    }

    /// In the shell, SIGINT ends `tail -f` (the command returns 0) instead of
    /// the process, and is unblocked again afterwards. The signal is sent to the
    /// thread running the command (`slotpool ctl` is single-threaded, so there
    /// a terminal's process-directed SIGINT reaches that thread; the test
    /// process has other threads, which must not see it).
    #[test]
    fn sigint_ends_a_followed_stream_in_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "hello\n").unwrap();
        let socket = dir.path().join("x.sock");
        let mut server = ControlServer::bind(&socket).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let server_thread = std::thread::spawn(move || {
            let mut handler = LogHandler(log);
            while !stop2.load(Ordering::Relaxed) {
                server
                    .wait_and_service(&mut handler, Duration::from_millis(20))
                    .unwrap();
            }
        });

        let out = SharedBuf::default();
        let mut out2 = out.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let ctl = Ctl {
            socket,
            timeout: Duration::from_secs(10),
        };
        let client = std::thread::spawn(move || {
            tx.send(nix::sys::pthread::pthread_self()).unwrap();
            let cmd = CtlCommand::Tail {
                name: "x".into(),
                follow: true,
                stderr: false,
                bytes: 100,
            };
            let code = ctl.execute(&cmd, &mut out2, &mut io::sink(), true);
            let still_blocked = SigSet::thread_get_mask().unwrap().contains(Signal::SIGINT);
            (code, still_blocked)
        });
        let thread = rx.recv().unwrap();
        // Once the line is printed the command is inside the stream, with
        // SIGINT blocked and readable from its signalfd.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !out.0.lock().unwrap().ends_with(b"hello\n") {
            assert!(std::time::Instant::now() < deadline, "tail never printed");
            std::thread::sleep(Duration::from_millis(10));
        }
        nix::sys::pthread::pthread_kill(thread, Signal::SIGINT).unwrap();
        let (code, still_blocked) = client.join().unwrap();
        assert_eq!(code, exit::OK);
        assert!(!still_blocked, "SIGINT is unblocked after the stream");
        stop.store(true, Ordering::Relaxed);
        server_thread.join().unwrap();
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words("  set gain:0 'gain db' -6 ").unwrap(),
            ["set", "gain:0", "gain db", "-6"]
        );
        assert_eq!(split_words(r#"tail "a b"\ c"#).unwrap(), ["tail", "a b c"]);
        assert_eq!(split_words("''").unwrap(), [""]);
        assert!(split_words("tail 'x").is_err());
        assert!(split_words("").unwrap().is_empty());
    }

    #[test]
    fn shell_lines_parse_with_the_same_verbs() {
        let p = ShellLine::try_parse_from(["set", "gain:0", "gain_db", "-6.5"]).unwrap();
        assert_eq!(
            p.command,
            CtlCommand::Set {
                slot: "gain:0".into(),
                param: "gain_db".into(),
                value: -6.5
            }
        );
        let p = ShellLine::try_parse_from(["tail", "-f", "sine:0", "--stderr"]).unwrap();
        assert_eq!(
            p.command,
            CtlCommand::Tail {
                name: "sine:0".into(),
                follow: true,
                stderr: true,
                bytes: DEFAULT_TAIL_BYTES
            }
        );
        assert!(ShellLine::try_parse_from(["start"]).is_err());
        assert!(ShellLine::try_parse_from(["launch"]).is_err());
    }

    #[test]
    fn status_table_aligns_columns_and_describes() {
        let mut a = ProgramStatus::new("sine:0", ProgramState::Running);
        a.pid = Some(123);
        a.uptime_s = Some(62);
        a.load = Some(0.125);
        a.fds = Some(7);
        let b = ProgramStatus::new("a-much-longer-name", ProgramState::Backoff);
        let report = StatusReport {
            programs: vec![a, b],
            host: HostStatus {
                pid: 1,
                uptime_s: 3600,
                fds: Some(12),
                config: "/etc/demo.toml".into(),
                backend: None,
                cycle_time_us: None,
                device_xruns: None,
                realtime: None,
                version: "0".into(),
            },
        };
        let table = status_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("NAME                STATE    PID  UPTIME   RESTARTS"));
        assert!(lines[0].ends_with("DESCRIPTION"));
        assert!(lines[1].starts_with("sine:0              RUNNING  123  0:01:02  0"));
        assert!(lines[1].contains("12.5%"));
        assert!(lines[1].ends_with("pid 123, uptime 0:01:02"));
        assert!(lines[2].ends_with("Exited too quickly (process log may have details)"));
        assert_eq!(
            lines[3],
            "host: pid 1, uptime 1:00:00, fds 12, config /etc/demo.toml"
        );
        // Every column starts at the same offset on every line.
        let col = lines[0].find("STATE").unwrap();
        assert_eq!(&lines[1][col..col + 7], "RUNNING");
        assert_eq!(&lines[2][col..col + 7], "BACKOFF");
    }
}
