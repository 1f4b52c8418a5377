//! A minimal in-test host built on the ring crate: creates a real sealed region, spawns a
//! real worker binary with the region fd inherited and the start-up environment set, beats
//! the host heartbeat and nudges the doorbell from a thread (the supervisor's slot tick,
//! docs/ABI.md "Idle rings"), and drives cycles and commands.
//!
//! Shared with `examples/worker-tremolo/tests` (included there by path).
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slotpool_ring::{
    Command as Cmd, Event, HostEnd, HostRegion, Monitor, MonoTime, OutputStatus, RingFault,
    SlotLayout, WorkerState,
};

/// Aborts the whole test process if not dropped within `limit`: a test that hangs fails CI
/// instead of stalling it.
pub struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    pub fn arm(name: &'static str, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::Builder::new()
            .name(format!("watchdog:{name}"))
            .spawn(move || {
                let start = Instant::now();
                while start.elapsed() < limit {
                    // Acquire pairs with the Release store in Drop.
                    if d.load(Ordering::Acquire) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                eprintln!("watchdog: test `{name}` still running after {limit:?}: aborting");
                std::process::abort();
            })
            .expect("spawn watchdog");
        Self { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Release pairs with the Acquire load in the watchdog thread.
        self.done.store(true, Ordering::Release);
    }
}

/// Generous limit for anything a test waits on (a loaded 2-core box is slow, not stuck).
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const SAMPLE_RATE: u32 = 48_000;

pub fn stereo(block_frames: u32) -> SlotLayout {
    SlotLayout {
        channels_in: 2,
        channels_out: 2,
        block_frames,
        audio_capacity: 8,
        command_capacity: 16,
        event_capacity: 32,
    }
}

/// The supervisor's slot tick in miniature: every few milliseconds, beats the host
/// heartbeat, then nudges the doorbell (the idle ring an untimed worker relies on), until
/// stopped or dropped.
pub struct Beater {
    stop: Arc<AtomicBool>,
    beating: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Beater {
    pub fn start(monitor: Monitor) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let beating = Arc::new(AtomicBool::new(true));
        let (s, b) = (stop.clone(), beating.clone());
        let thread = std::thread::spawn(move || {
            // Relaxed: control flags; nothing is published through them.
            while !s.load(Ordering::Relaxed) {
                if b.load(Ordering::Relaxed) {
                    monitor.beat_host();
                }
                monitor.nudge();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            stop,
            beating,
            thread: Some(thread),
        }
    }

    /// Keeps nudging but stops (or resumes) beating: a host whose heartbeat stalled
    /// while it still rings.
    pub fn set_beating(&self, on: bool) {
        self.beating.store(on, Ordering::Relaxed);
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("beater thread");
        }
    }
}

impl Drop for Beater {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct Spawn {
    pub ready_pipe: bool,
    /// `Some(None)`: pass this process's pid; `Some(Some(p))`: pass `p`; `None`: omit.
    pub parent_pid: Option<Option<i32>>,
    pub process_group: bool,
    pub sample_rate: u32,
    /// Environment left out entirely (started "by hand").
    pub bare: bool,
    /// More environment (`SLOTPOOL_PREWAKE_US`, say).
    pub env: Vec<(String, String)>,
}

impl Default for Spawn {
    fn default() -> Self {
        Self {
            ready_pipe: true,
            parent_pid: Some(None),
            process_group: true,
            sample_rate: SAMPLE_RATE,
            bare: false,
            env: Vec::new(),
        }
    }
}

/// A spawned worker: the child, its ready pipe and its captured stderr.
pub struct WorkerProc {
    pub child: Child,
    ready: Option<File>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerProc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the ready byte; `false` if it did not come within `limit` (or the pipe
    /// closed without it).
    pub fn wait_ready(&mut self, limit: Duration) -> bool {
        let Some(ready) = self.ready.as_mut() else {
            return false;
        };
        let mut fds = [nix::poll::PollFd::new(
            ready.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(1) => {
                let mut byte = [0u8; 1];
                matches!(ready.read(&mut byte), Ok(1)) && byte == *b"\n"
            }
            _ => false,
        }
    }

    /// Polls for exit up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for exit (bounded by [`PATIENCE`]) and returns the status.
    pub fn exit_status(&mut self) -> ExitStatus {
        match self.wait_exit(PATIENCE) {
            Some(s) => s,
            None => panic!(
                "worker pid {} did not exit within {PATIENCE:?}; stderr:\n{}",
                self.pid(),
                self.stderr_text()
            ),
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// Everything the worker wrote to stderr so far (complete after exit).
    pub fn stderr_text(&mut self) -> String {
        if self.child.try_wait().ok().flatten().is_some()
            && let Some(t) = self.stderr_thread.take()
        {
            let _ = t.join();
        }
        self.stderr.lock().unwrap().clone()
    }

    /// Polls stderr until it contains `needle`.
    pub fn wait_stderr(&mut self, needle: &str, limit: Duration) -> Option<String> {
        let end = Instant::now() + limit;
        loop {
            let text = self.stderr_text();
            if text.contains(needle) {
                return Some(text);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Describes how a process ended, for assertions.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => format!("{status:?}"),
    }
}

/// Whether process `pid` is gone (no /proc entry) or a zombie.
pub fn process_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => proc_state(&stat) == Some('Z'),
    }
}

/// The state letter of /proc/PID/stat (`R`, `S`, `T`, `Z`...).
pub fn proc_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

pub fn process_state(pid: i32) -> Option<char> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| proc_state(&s))
}

/// Open fds of process `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The host side of one slot.
pub struct TestHost {
    pub region: HostRegion,
    pub end: HostEnd,
    pub monitor: Monitor,
    pub layout: SlotLayout,
    pub beater: Beater,
    pub cycle: u64,
    /// Whether the last ring of [`TestHost::process`] found the worker asleep.
    pub last_ring_woke: bool,
}

impl TestHost {
    pub fn new(slot: &str, layout: SlotLayout) -> Self {
        let region = HostRegion::create(slot, layout).expect("create region");
        let end = region.host_end().expect("host end");
        let monitor = region.monitor();
        let beater = Beater::start(monitor.clone());
        Self {
            region,
            end,
            monitor,
            layout,
            beater,
            cycle: 0,
            last_ring_woke: false,
        }
    }

    /// The command that starts `exe args` as this slot's worker (not yet spawned).
    pub fn prepare(&self, exe: &Path, args: &[&str], how: &Spawn) -> Prepared {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for var in [
            "SLOTPOOL_REGION_FD",
            "SLOTPOOL_SLOT",
            "SLOTPOOL_READY_FD",
            "SLOTPOOL_PARENT_PID",
            "SLOTPOOL_SAMPLE_RATE",
        ] {
            cmd.env_remove(var);
        }
        if how.process_group {
            cmd.process_group(0);
        }
        if how.bare {
            return Prepared {
                cmd,
                ready: None,
                keep: Vec::new(),
            };
        }
        // CLOEXEC duplicates: only the child being spawned inherits them (CLOEXEC is
        // cleared after fork, in the child).
        let region_fd: OwnedFd = self
            .region
            .fd()
            .try_clone_to_owned()
            .expect("dup region fd");
        let (ready_read, ready_write) = if how.ready_pipe {
            let (r, w) = std::io::pipe().expect("pipe");
            (Some(File::from(OwnedFd::from(r))), Some(OwnedFd::from(w)))
        } else {
            (None, None)
        };
        cmd.env("SLOTPOOL_REGION_FD", region_fd.as_raw_fd().to_string())
            .env("SLOTPOOL_SLOT", self.region.slot_name())
            .env("SLOTPOOL_SAMPLE_RATE", how.sample_rate.to_string());
        for (k, v) in &how.env {
            cmd.env(k, v);
        }
        if let Some(w) = &ready_write {
            cmd.env("SLOTPOOL_READY_FD", w.as_raw_fd().to_string());
        }
        match how.parent_pid {
            Some(None) => {
                cmd.env("SLOTPOOL_PARENT_PID", std::process::id().to_string());
            }
            Some(Some(p)) => {
                cmd.env("SLOTPOOL_PARENT_PID", p.to_string());
            }
            None => {}
        }
        let inherit: Vec<i32> = std::iter::once(region_fd.as_raw_fd())
            .chain(ready_write.as_ref().map(|w| w.as_raw_fd()))
            .collect();
        let clear_cloexec = move || {
            for &fd in &inherit {
                // SAFETY: fcntl(F_SETFD) on an fd number; it touches no memory of ours.
                if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: the closure runs in the forked child before exec and only calls
        // fcntl(F_SETFD, 0), which is async-signal-safe and does not allocate, on fd numbers
        // that are open in the child: `Prepared::keep` holds the parent's copies until
        // spawn returns.
        unsafe { cmd.pre_exec(clear_cloexec) };
        Prepared {
            cmd,
            ready: ready_read,
            keep: std::iter::once(region_fd).chain(ready_write).collect(),
        }
    }

    /// Spawns `exe args` as this slot's worker.
    pub fn spawn_with(&self, exe: &Path, args: &[&str], how: &Spawn) -> WorkerProc {
        self.prepare(exe, args, how).spawn()
    }

    pub fn spawn(&self, exe: &Path, args: &[&str]) -> WorkerProc {
        self.spawn_with(exe, args, &Spawn::default())
    }

    /// Spawns and waits until the worker is ready and RUNNING.
    pub fn spawn_ready(&mut self, exe: &Path, args: &[&str]) -> WorkerProc {
        let mut w = self.spawn(exe, args);
        assert!(
            w.wait_ready(PATIENCE),
            "worker `{}` not ready; stderr:\n{}",
            args.join(" "),
            w.stderr_text()
        );
        assert_eq!(self.monitor.worker_state(), WorkerState::Running);
        w
    }

    /// Pushes one input block, rings, waits for the output of the same cycle.
    pub fn process(&mut self, input: &[f32], output: &mut [f32]) -> Result<u64, String> {
        self.cycle += 1;
        let cycle = self.cycle;
        self.end
            .audio_in
            .push(cycle, input)
            .map_err(|e| format!("push cycle {cycle}: {e:?}"))?;
        self.last_ring_woke = self.end.bell.ring(cycle);
        let deadline = MonoTime::now().saturating_add(PATIENCE);
        match self.end.wait_output(cycle, output, deadline) {
            Ok(OutputStatus::Ready) => Ok(cycle),
            Ok(OutputStatus::Late) => Err(format!("cycle {cycle}: late")),
            Err(f) => Err(format!("cycle {cycle}: ring fault {f:?}")),
        }
    }

    /// Like [`TestHost::process`] but returns the ring fault, if that is what happens.
    pub fn process_raw(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        limit: Duration,
    ) -> Result<OutputStatus, RingFault> {
        self.cycle += 1;
        let cycle = self.cycle;
        match self.end.audio_in.push(cycle, input) {
            Ok(()) => {}
            Err(slotpool_ring::PushError::Fault(f)) => return Err(f),
            Err(_) => return Ok(OutputStatus::Late),
        }
        self.end.bell.ring(cycle);
        let deadline = MonoTime::now().saturating_add(limit);
        self.end.wait_output(cycle, output, deadline)
    }

    /// Sends a command, rings, and waits for its answer (Ack or Error with its seq);
    /// other events met on the way are returned too.
    pub fn send(&mut self, command: Cmd) -> (Event, Vec<Event>) {
        let seq = self.end.commands.push(command).expect("push command");
        self.end.bell.ring(self.cycle);
        let end = Instant::now() + PATIENCE;
        let mut others = Vec::new();
        loop {
            match self.end.events.pop().expect("event ring") {
                Some((_, e @ (Event::Ack { seq: s } | Event::Error { seq: s, .. })))
                    if s == seq =>
                {
                    return (e, others);
                }
                Some((_, e)) => others.push(e),
                None => {
                    assert!(Instant::now() < end, "no answer to {command:?} (seq {seq})");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Every event queued now.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some((_, e)) = self.end.events.pop().expect("event ring") {
            out.push(e);
        }
        out
    }
}

/// A worker command ready to spawn, with the parent's copies of the inherited fds.
pub struct Prepared {
    pub cmd: Command,
    ready: Option<File>,
    keep: Vec<OwnedFd>,
}

impl Prepared {
    pub fn spawn(mut self) -> WorkerProc {
        let mut child = self.cmd.spawn().expect("spawn worker");
        // The child has its copies now; close ours (the ready pipe's write end above all,
        // or a dead worker would never look like EOF).
        drop(self.keep);
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        let stderr_thread = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        WorkerProc {
            child,
            ready: self.ready,
            stderr,
            stderr_thread: Some(stderr_thread),
        }
    }
}

/// Deterministic test signal: planar block `cycle` of a layout, any content that exercises
/// the modules (a few tones plus a decaying click), different per channel.
pub fn test_input(layout: &SlotLayout, block: u64) -> Vec<f32> {
    let frames = layout.block_frames as usize;
    let mut v = vec![0.0; layout.input_samples()];
    for c in 0..layout.channels_in as usize {
        for i in 0..frames {
            let n = block as usize * frames + i;
            let t = n as f32 / SAMPLE_RATE as f32;
            let tone = (std::f32::consts::TAU * (220.0 + 110.0 * c as f32) * t).sin();
            let click = if n.is_multiple_of(1000) { 1.0 } else { 0.0 };
            v[c * frames + i] = 0.5 * tone + click;
        }
    }
    v
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
