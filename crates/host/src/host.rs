//! `slotpool run`: the host process. It stays in the foreground (never forks itself
//! away), owns the one poll loop of the supervisor thread — signals (signalfd), child
//! pidfds, log pipes, the control socket, timers as the poll timeout — and speaks
//! sd_notify when started by systemd.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;

use crate::audio::device::HostChoice;
use crate::audio::{LiveAudio, OpenOptions, StreamFormat};
use crate::config::{Backend, Config};
use crate::control::notify::Notifier;
use crate::control::server::ControlServer;
use crate::engine::{EngineSettings, Pacing, engine};
use crate::supervise::engine_link::EngineLink;
use crate::supervise::supervisor::{HostRequest, Supervisor, Token, worker_bin};
use crate::supervise::sys;

/// How long start-up waits for the audio thread's first cycle before it starts workers.
const FIRST_CYCLE_WAIT: Duration = Duration::from_secs(2);

/// What the command line adds to the config for `slotpool run`.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides `[engine] backend`.
    pub backend: Option<Backend>,
    /// Overrides `[engine] device`.
    pub device: Option<String>,
    /// Which cpal host `cpal`/`auto` use.
    pub host: HostChoice,
    /// Also write the master output to this WAV file.
    pub record: Option<PathBuf>,
}

/// Starts the audio engine for the slots of `config`: the engine, then the backend
/// driving its audio half. `None` when the config has no slot (a plain supervisor).
fn start_audio(config: &Config, opts: &RunOptions) -> Result<Option<(LiveAudio, EngineLink)>> {
    if !config.programs.iter().any(|p| p.slot.is_some()) {
        tracing::info!("no slot programs: the audio engine is not started");
        return Ok(None);
    }
    let settings = EngineSettings::from_config(&config.engine, Pacing::RealTime);
    let (rt, handle) = engine(settings);
    let open = OpenOptions {
        format: StreamFormat::from_engine(&config.engine),
        backend: opts.backend.unwrap_or(config.engine.backend),
        device: opts.device.clone().or_else(|| config.engine.device.clone()),
        host: opts.host,
        realtime: config.engine.realtime,
    };
    let mut notice = String::new();
    let live = LiveAudio::start(&open, Box::new(rt), opts.record.as_deref(), &mut notice);
    // `auto` fell back to the null clock: one line, as is.
    eprint!("{notice}");
    let live = live.context("cannot start the audio backend")?;
    // Slot workers run one real-time priority below the audio thread, and which
    // priority that is is settled by the audio thread's first cycle (under JACK the
    // server chose it). Let that cycle happen before any worker starts; bounded, since
    // a stream that never calls back is the backend's problem, not the supervisor's.
    let stats = live.running().stats();
    let until = Instant::now() + FIRST_CYCLE_WAIT;
    while stats.blocks() == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    let backend = live.running().describe();
    tracing::info!(
        "audio: {backend}; realtime {}{}",
        live.running().stats().realtime(),
        opts.record
            .as_ref()
            .map(|p| format!("; recording to {}", p.display()))
            .unwrap_or_default()
    );
    let link = EngineLink::new(handle).with_audio(live.running().stats().clone(), backend);
    Ok(Some((live, link)))
}

/// Stops the audio (the backend, then the recording); says what the recording holds.
fn stop_audio(live: LiveAudio) {
    match live.stop() {
        Ok(Some(r)) if r.frames_dropped > 0 => tracing::warn!(
            "recording finished: {} frames written, {} frames dropped (the writer fell behind)",
            r.frames_written,
            r.frames_dropped
        ),
        Ok(Some(r)) => tracing::info!("recording finished: {} frames written", r.frames_written),
        Ok(None) => {}
        Err(e) => tracing::error!("the recording could not be finished: {e:#}"),
    }
}

/// Runs the host for `config` until SIGTERM/SIGINT or `ctl shutdown` has stopped
/// everything. Returns an error only for start-up failures (socket taken, …).
///
/// Order: the audio engine and its backend start before any worker (each slot's
/// region is attached to the engine before its first worker runs); on shutdown the
/// audio stops first (the recording is finished), then the workers.
pub fn run(config: Config, opts: &RunOptions) -> Result<()> {
    // Before anything opens a file: keep fds 3 and 4 for handing over to workers.
    sys::reserve_handover_fds().context("cannot reserve fds 3 and 4 for workers")?;

    // Signals are read from a signalfd in the loop; block them for normal delivery.
    // (Children get an empty mask: std resets it between fork and exec.)
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block()
        .context("cannot block SIGTERM/SIGINT/SIGHUP")?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("cannot create a signalfd")?;

    let mut notifier = Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!("NOTIFY_SOCKET is set but unusable ({e}); not notifying systemd");
        Notifier::disabled()
    });
    let socket = config
        .control
        .socket
        .clone()
        .unwrap_or_else(|| ControlServer::default_path(&config.path));
    let mut server = ControlServer::bind(&socket)
        .with_context(|| format!("cannot listen on the control socket {}", socket.display()))?;
    tracing::info!(
        "slotpool {} running {} (pid {}); control socket {}; logs in {}",
        env!("CARGO_PKG_VERSION"),
        config.path.display(),
        std::process::id(),
        socket.display(),
        config.log_dir().display()
    );

    let (mut live, link) = match start_audio(&config, opts)? {
        Some((live, link)) => (Some(live), Some(link)),
        None => (None, None),
    };
    let now = Instant::now();
    let mut sup = Supervisor::with_engine(config, worker_bin(), now, link);
    sup.start_autostart(now);
    let mut ready_sent = false;

    loop {
        let now = Instant::now();
        sup.tick(now);
        if sup.take_request() == Some(HostRequest::Shutdown) && !sup.is_shutting_down() {
            let _ = notifier.stopping();
            if let Some(l) = live.take() {
                stop_audio(l);
            }
            sup.begin_shutdown(now);
        }
        for ev in sup.take_events() {
            server.publish(&ev);
        }
        if !ready_sent && !sup.is_shutting_down() && sup.autostart_settled() {
            ready_sent = true;
            let (running, total) = sup.running_count();
            tracing::info!("ready: {running} of {total} instance(s) RUNNING");
            let _ = notifier.ready();
            let _ = notifier.status(&format!("{running} of {total} instances running"));
        }
        // WATCHDOG=1 only from here: a loop that stops going round stops feeding it.
        let _ = notifier.watchdog_if_due(now);
        if sup.shutdown_done(now) {
            for ev in sup.take_events() {
                server.publish(&ev);
            }
            break;
        }

        let mut timeout = sup.next_wake(now).saturating_duration_since(now);
        if let Some(t) = server.next_timeout() {
            timeout = timeout.min(t);
        }
        if let Some(t) = notifier.watchdog_due_in(now) {
            timeout = timeout.min(t);
        }
        let (signalled, ready) = {
            let sup_fds = sup.poll_fds();
            let ctl = server.poll_interest();
            let mut pfds = Vec::with_capacity(1 + ctl.len() + sup_fds.len());
            pfds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
            pfds.extend(ctl.iter().map(|(fd, flags)| PollFd::new(*fd, *flags)));
            pfds.extend(
                sup_fds
                    .iter()
                    .map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLIN)),
            );
            // ppoll: a timeout to the microsecond (poll's milliseconds would turn the
            // engine's sub-millisecond look while a slot restarts into a whole one).
            let timeout = timeout.min(Duration::from_secs(60));
            let _ = ppoll(&mut pfds, Some(TimeSpec::from_duration(timeout)), None);
            let fired = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
            let signalled = fired(&pfds[0]);
            let base = 1 + ctl.len();
            let ready: Vec<Token> = sup_fds
                .iter()
                .enumerate()
                .filter(|(k, _)| fired(&pfds[base + k]))
                .map(|(_, (_, t))| *t)
                .collect();
            (signalled, ready)
        };
        if signalled {
            while let Ok(Some(info)) = signals.read_signal() {
                let now = Instant::now();
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGTERM | Signal::SIGINT) if sup.is_shutting_down() => {
                        sup.force_shutdown(now)
                    }
                    Ok(Signal::SIGTERM | Signal::SIGINT) => {
                        let _ = notifier.stopping();
                        if let Some(l) = live.take() {
                            stop_audio(l);
                        }
                        sup.begin_shutdown(now);
                    }
                    Ok(Signal::SIGHUP) if !sup.is_shutting_down() => {
                        let _ = notifier.reloading();
                        match sup.reload(now) {
                            Ok(_) => tracing::info!("SIGHUP: configuration reloaded"),
                            Err(e) => tracing::error!("SIGHUP: {e}"),
                        }
                        let _ = notifier.ready();
                    }
                    _ => {}
                }
            }
        }
        let now = Instant::now();
        for t in ready {
            sup.on_ready(t, now);
        }
        server.service(&mut sup);
    }
    if let Some(l) = live.take() {
        stop_audio(l);
    }
    tracing::info!("all programs stopped; exiting");
    Ok(())
}
