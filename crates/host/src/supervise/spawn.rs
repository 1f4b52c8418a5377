//! Spawning one instance: `std::process::Command` plus a `pre_exec` hook that makes only
//! async-signal-safe calls, then a pidfd right after the fork.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::stat::{Mode, umask};

use super::limits::LimitPlan;
use super::logs::LogPipe;
use super::sched::{RtRequest, RtStep};
use super::sys;
use crate::config::{Launch, ProgramConfig};

/// Environment variables of the host that must not reach children (a child speaking
/// sd_notify on the host's socket would confuse the service manager).
const HOST_ONLY_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// What one spawn needs besides the program's config.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// The program.
    pub program: &'a ProgramConfig,
    /// `name:index`.
    pub instance: &'a str,
    /// The built-in worker binary (for `module` programs).
    pub worker_bin: &'a Path,
    /// Pipe stdout to the host (else /dev/null).
    pub pipe_stdout: bool,
    /// Pipe stderr to the host (else /dev/null).
    pub pipe_stderr: bool,
    /// Limits to apply in the child.
    pub limits: &'a LimitPlan,
    /// A slot's region fd, handed over as fd [`sys::REGION_FD`].
    pub region_fd: Option<RawFd>,
    /// The engine's rate, handed to slot workers as `SLOTPOOL_SAMPLE_RATE` (the
    /// region layout does not carry it; workers default to 48000).
    pub sample_rate: Option<u32>,
    /// Start it as a standby: with a go pipe (`SLOTPOOL_GO_FD`) it waits on before it
    /// touches the region. Slot programs only.
    pub standby: bool,
    /// Real-time scheduling for a slot worker (see [`super::sched`]); `None` leaves the
    /// child at the host's normal scheduling.
    pub rt: Option<RtRequest>,
    /// A slot worker's pre-wake window in µs, handed over as `SLOTPOOL_PREWAKE_US`
    /// (0: not set, the worker sleeps until it is rung).
    pub prewake_us: u32,
}

/// A freshly spawned, unreaped child.
#[derive(Debug)]
pub struct SpawnedChild {
    /// Its pid, which is also its process group id. Valid only until it is reaped.
    pub pid: i32,
    /// The pidfd every signal and the reaping go through.
    pub pidfd: OwnedFd,
    /// Read end of its stdout pipe.
    pub stdout: Option<LogPipe>,
    /// Read end of its stderr pipe.
    pub stderr: Option<LogPipe>,
    /// Read end (non-blocking) of its ready pipe (`SLOTPOOL_READY_FD`; slot programs):
    /// readable once it runs, or once it exits.
    pub ready: Option<OwnedFd>,
    /// Write end of its go pipe (standbys): one byte sends it in, closing it releases it.
    pub go: Option<OwnedFd>,
    /// When [`SpawnSpec::rt`] was asked for and not applied: which step failed and why
    /// (the child runs at normal priority).
    pub rt_refused: Option<(RtStep, Errno)>,
}

/// The executable and arguments of `spec`.
pub fn argv(spec: &SpawnSpec<'_>) -> (PathBuf, Vec<String>) {
    match &spec.program.launch {
        Launch::Command { program, args } => (PathBuf::from(program), args.clone()),
        Launch::Module(module) => {
            let mut args = vec!["--module".to_string(), module.clone()];
            if let Some(slot) = &spec.program.slot {
                for (k, v) in &slot.params {
                    args.push("--param".into());
                    args.push(format!("{k}={v}"));
                }
            }
            (spec.worker_bin.to_path_buf(), args)
        }
    }
}

/// Spawns the instance. Errors are messages for status and the log (`cannot exec
/// /opt/x: No such file or directory (os error 2)`); the host never panics on them.
pub fn spawn(spec: &SpawnSpec<'_>) -> Result<SpawnedChild, String> {
    let (exe, args) = argv(spec);
    let mut cmd = Command::new(&exe);
    cmd.args(&args);
    for k in HOST_ONLY_ENV {
        cmd.env_remove(k);
    }
    cmd.envs(&spec.program.env);
    let host_pid = std::process::id() as i32;
    if spec.program.slot.is_some() {
        cmd.env("SLOTPOOL_SLOT", spec.instance);
        cmd.env("SLOTPOOL_PARENT_PID", host_pid.to_string());
        if spec.region_fd.is_some() {
            // A standby's region goes by another name: a worker that does not know
            // standbys then refuses to start (exit 2) instead of using the region while
            // the slot's worker still owns it.
            let var = if spec.standby {
                "SLOTPOOL_STANDBY_REGION_FD"
            } else {
                "SLOTPOOL_REGION_FD"
            };
            cmd.env(var, sys::REGION_FD.to_string());
        }
        if let Some(rate) = spec.sample_rate {
            cmd.env("SLOTPOOL_SAMPLE_RATE", rate.to_string());
        }
        if spec.prewake_us > 0 {
            cmd.env("SLOTPOOL_PREWAKE_US", spec.prewake_us.to_string());
        }
    }
    // Pipes are made close-on-exec; the child gets its ends by dup2 onto the reserved
    // numbers in the hook below, every other child never sees them (so EOF means what
    // it says).
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot make a pipe: {e}"))
    };
    let ready = match spec.program.slot {
        Some(_) => {
            cmd.env("SLOTPOOL_READY_FD", sys::READY_FD.to_string());
            Some(pipe()?)
        }
        None => None,
    };
    let go = match spec.program.slot {
        Some(_) if spec.standby => {
            cmd.env("SLOTPOOL_GO_FD", sys::GO_FD.to_string());
            Some(pipe()?)
        }
        _ => None,
    };
    let ready_child: Option<RawFd> = ready.as_ref().map(|(_, w)| w.as_raw_fd());
    let go_child: Option<RawFd> = go.as_ref().map(|(r, _)| r.as_raw_fd());
    if let Some(dir) = &spec.program.workingdir {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::null());
    cmd.stdout(if spec.pipe_stdout {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stderr(if spec.pipe_stderr {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    // Its own process group (setpgid(0, 0) in the child), so that a stop reaches its
    // descendants too.
    cmd.process_group(0);

    let mask = spec.program.umask;
    let rlimit_as = spec.limits.rlimit_as;
    let cgroup_procs: Option<RawFd> = spec.limits.cgroup.as_ref().map(|g| g.procs.as_raw_fd());
    let region = spec.region_fd;
    // The child reports a refused real-time request through this pipe (one 5-byte
    // write: step, errno), so that a refusal never fails the start.
    let mut rt_refused = None;
    let report = match spec.rt {
        Some(_) => match nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
            Ok(pair) => Some(pair),
            Err(e) => {
                rt_refused = Some((RtStep::Report, e));
                None
            }
        },
        None => None,
    };
    let rt = report.as_ref().and(spec.rt);
    let report_w: Option<RawFd> = report.as_ref().map(|(_, w)| w.as_raw_fd());
    let hook = move || -> io::Result<()> {
        // Only async-signal-safe calls from here to exec: each is one syscall, no
        // allocation, no lock (the parent may have had other threads mid-malloc).
        sys::reset_signals()?;
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        // The host may have died between fork and prctl: then nobody would kill us.
        // PDEATHSIG fires when the forking *thread* exits: the supervisor loop runs on
        // the host's main thread for the host's whole life.
        if nix::unistd::getppid().as_raw() != host_pid {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        if let Some(fd) = cgroup_procs {
            sys::write_raw(fd, b"0")?;
        }
        if let Some(m) = mask {
            umask(Mode::from_bits_truncate(m));
        }
        if let Some(limit) = rlimit_as {
            setrlimit(Resource::RLIMIT_AS, limit, limit)?;
        }
        if let (Some(rt), Some(w)) = (rt, report_w)
            && let Err((step, errno)) =
                sys::enter_realtime(rt.priority, rt.rttime_soft_us, rt.rttime_hard_us)
        {
            // Not an error of the spawn: the worker runs at normal priority. If even the
            // report cannot be written, the host sees an applied request: a 5-byte write
            // to an empty pipe cannot fail short of a broken pipe.
            let e = (errno as i32).to_le_bytes();
            let _ = sys::write_raw(w, &[step.code(), e[0], e[1], e[2], e[3]]);
        }
        // Nothing above stdio survives the exec except what is handed over below.
        sys::cloexec_from(sys::REGION_FD)?;
        if let Some(fd) = region {
            sys::hand_over(fd, sys::REGION_FD)?;
        }
        if let Some(fd) = ready_child {
            sys::hand_over(fd, sys::READY_FD)?;
        }
        if let Some(fd) = go_child {
            sys::hand_over(fd, sys::GO_FD)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only makes
    // async-signal-safe calls (pthread_sigmask, signal, prctl, getppid, write, umask,
    // setrlimit, sched_setscheduler, close_range, fcntl, dup2); it captures only Copy
    // values and allocates nothing.
    unsafe { cmd.pre_exec(hook) };

    let mut child = cmd.spawn().map_err(|e| spawn_error(&exe, &e))?;
    let pid = child.id() as i32;
    if let Some((r, w)) = report {
        // spawn() returned after the exec: the child's copy of `w` is closed and its
        // report, if any, is in the pipe.
        drop(w);
        rt_refused = read_rt_report(&r);
    }
    let pidfd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            // Without a pidfd the child cannot be tracked: end it now, while its pid
            // is still ours (unreaped), and report a failed start.
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "cannot track the child (pidfd_open: {e}); killed it"
            ));
        }
    };
    // fcntl(O_NONBLOCK) on a pipe we just made cannot fail in practice; if it did, the
    // pipe is dropped and the child's writes get EPIPE rather than blocking the host.
    let stdout = child
        .stdout
        .take()
        .and_then(|p| LogPipe::new(OwnedFd::from(p)).ok());
    let stderr = child
        .stderr
        .take()
        .and_then(|p| LogPipe::new(OwnedFd::from(p)).ok());
    // Our copies of the child's ends close here; we keep the other ends.
    let ready = ready.and_then(|(r, _w)| {
        nix::fcntl::fcntl(
            &r,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .ok()
        .map(|_| r)
    });
    let go = go.map(|(_r, w)| w);
    // `child` is dropped without waiting: the pidfd owns the reaping from here on.
    Ok(SpawnedChild {
        pid,
        pidfd,
        stdout,
        stderr,
        ready,
        go,
        rt_refused,
    })
}

/// The child's report of a refused real-time request: `None` when it wrote nothing
/// (applied).
fn read_rt_report(r: &OwnedFd) -> Option<(RtStep, Errno)> {
    let mut buf = [0u8; 5];
    match nix::unistd::read(r, &mut buf) {
        Ok(5) => {
            let step = RtStep::from_code(buf[0])?;
            let errno = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
            Some((step, Errno::from_raw(errno)))
        }
        // Nothing written (EOF, or EAGAIN while a concurrent fork elsewhere still holds
        // a copy of the write end): the child made no report.
        _ => None,
    }
}

fn spawn_error(exe: &Path, e: &io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => {
            "; check `command` (or SLOTPOOL_WORKER_BIN for modules) and `workingdir`"
        }
        Some(libc::EACCES) => "; is it executable and are its directories searchable?",
        Some(libc::EMFILE | libc::ENFILE) => {
            "; the host ran out of file descriptors (raise the limit)"
        }
        _ => "",
    };
    format!("cannot exec {}: {e}{hint}", exe.display())
}
