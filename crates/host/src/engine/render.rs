//! `slotpool render CONFIG -o OUT.wav --seconds S [--in-process]`: renders the patch
//! offline, as fast as it goes, into a 32-bit float WAV file.
//!
//! By default through worker processes, spawned by the supervisor's spawner (the same
//! code path as `slotpool run`) and driven by the engine with [`Pacing::Offline`]
//! (every slot waited for, so nothing falls back). With `--in-process` the same patch
//! is rendered by the [`Reference`] renderer with the modules linked in. The two
//! files are identical bit for bit; a render through workers in which any block fell
//! back is reported as an error, never silently written as if exact.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use slotpool_ring::{HostRegion, SlotLayout, WorkerState};

use super::BlockProcessor;
use super::cycle::{EngineHandle, EngineRt, EngineSettings, Pacing, engine};
use super::patch::{build_patch, slot_specs};
use super::reference::Reference;
use crate::config::Config;
use crate::supervise::limits::LimitPlan;
use crate::supervise::spawn::{SpawnSpec, SpawnedChild, spawn};
use crate::supervise::supervisor::worker_bin;
use crate::supervise::sys;

/// How long a worker may take to reach RUNNING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `slotpool render`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  slotpool render examples/demo.toml -o demo.wav --seconds 10\n  slotpool render examples/demo.toml -o ref.wav --seconds 10 --in-process\n  cmp demo.wav ref.wav   # identical: the workers compute what the reference computes"
)]
pub struct RenderArgs {
    /// The configuration file.
    pub config: PathBuf,
    /// The WAV file to write (32-bit float, the engine's channels and rate).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Length in seconds.
    #[arg(long)]
    pub seconds: f64,
    /// Render with the modules linked into this process (the reference) instead of
    /// through worker processes.
    #[arg(long)]
    pub in_process: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What a render did.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderReport {
    /// Frames written.
    pub frames: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Worker processes used (0 in-process).
    pub workers: usize,
}

/// Renders `args.config` into `args.output`.
///
/// # Errors
/// An invalid config (all problems listed), a patch the router refuses, a worker that
/// could not start, a late block, or an I/O error on the output.
pub fn run(args: &RenderArgs) -> Result<RenderReport> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!(
            "--seconds must be a positive number of seconds, got {}",
            args.seconds
        );
    }
    let config = Config::load(&args.config).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nslotpool: {} is invalid; nothing was rendered",
            args.config.display()
        )
    })?;
    let e = &config.engine;
    let frames_total = (args.seconds * f64::from(e.sample_rate)).ceil() as u64;
    let started = Instant::now();
    if args.in_process {
        let mut reference = Reference::new(&config)?;
        render_with(
            &config,
            &mut reference,
            frames_total,
            &args.output,
            args.quiet,
        )?;
        return Ok(RenderReport {
            frames: frames_total,
            elapsed: started.elapsed(),
            workers: 0,
        });
    }
    sys::reserve_handover_fds().context("cannot reserve fds 3 and 4 for workers")?;
    let mut workers = Workers::start(&config)?;
    let result = render_with(
        &config,
        &mut workers.rt,
        frames_total,
        &args.output,
        args.quiet,
    );
    let late = workers.check();
    let count = workers.children.len();
    workers.stop();
    result?;
    if let Some(msg) = late {
        // The file holds fallback blocks: remove it rather than leave a wrong render.
        let _ = std::fs::remove_file(&args.output);
        bail!("{msg}; {} was not written", args.output.display());
    }
    Ok(RenderReport {
        frames: frames_total,
        elapsed: started.elapsed(),
        workers: count,
    })
}

fn render_with(
    config: &Config,
    proc_: &mut dyn BlockProcessor,
    frames_total: u64,
    out: &Path,
    quiet: bool,
) -> Result<()> {
    let e = &config.engine;
    let (ch, frames) = (e.channels as usize, e.block_frames as usize);
    let spec = hound::WavSpec {
        channels: e.channels as u16,
        sample_rate: e.sample_rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(out, spec)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let blocks = frames_total.div_ceil(frames as u64);
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(blocks)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} rendering [{bar:40}] {percent}% {elapsed} (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let input = vec![0.0f32; ch * frames];
    let mut output = vec![0.0f32; ch * frames];
    let mut left = frames_total;
    for _ in 0..blocks {
        proc_.process(&input, &mut output);
        let n = (left as usize).min(frames);
        for i in 0..n {
            for c in 0..ch {
                writer.write_sample(output[c * frames + i])?;
            }
        }
        left -= n as u64;
        bar.inc(1);
    }
    bar.finish_and_clear();
    writer
        .finalize()
        .with_context(|| format!("cannot finish {}", out.display()))?;
    Ok(())
}

/// The engine plus one worker process per slot, for an offline render.
struct Workers {
    rt: EngineRt,
    handle: EngineHandle,
    children: Vec<(String, SpawnedChild)>,
    // Kept alive: the workers map them.
    _regions: Vec<HostRegion>,
}

impl Workers {
    fn start(config: &Config) -> Result<Self> {
        let settings = EngineSettings::from_config(&config.engine, Pacing::Offline);
        let (rt, handle) = engine(settings);
        let patch = build_patch(config)?;
        let specs = slot_specs(config)?;
        let bin = worker_bin();
        // Dropped on any error below: kills and reaps the workers started so far.
        let mut this = Workers {
            rt,
            handle,
            children: Vec::new(),
            _regions: Vec::new(),
        };
        for spec in &specs {
            let program = spec.name.split(':').next().unwrap_or_default();
            let Some(p) = config.program(program) else {
                bail!("slot {} has no program", spec.name)
            };
            let layout = SlotLayout {
                channels_in: spec.channels_in,
                channels_out: spec.channels_out,
                block_frames: config.engine.block_frames,
                audio_capacity: 4,
                command_capacity: 64,
                event_capacity: 64,
            };
            let region = HostRegion::create(&spec.name, layout)
                .with_context(|| format!("slot {}: cannot create its region", spec.name))?;
            let end = region
                .host_end()
                .with_context(|| format!("slot {}: cannot take its host end", spec.name))?;
            this.handle.attach(spec, end, region.monitor())?;
            // The worker must run at the engine's rate (its default is 48 kHz).
            let mut program = p.clone();
            program.env.insert(
                "SLOTPOOL_SAMPLE_RATE".into(),
                config.engine.sample_rate.to_string(),
            );
            let limits = LimitPlan::default();
            let child = spawn(&SpawnSpec {
                program: &program,
                instance: &spec.name,
                worker_bin: &bin,
                pipe_stdout: false,
                pipe_stderr: false,
                limits: &limits,
                region_fd: Some(region.fd().as_raw_fd()),
                sample_rate: None,
                standby: false,
                // Offline: no clock and no deadline, so nothing to preempt for.
                rt: None,
                // Offline: rings come as fast as the workers go, there is no period.
                prewake_us: 0,
            })
            .map_err(|e| anyhow::anyhow!("slot {}: {e}", spec.name))?;
            let monitor = region.monitor();
            this.children.push((spec.name.clone(), child));
            this._regions.push(region);
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                match monitor.worker_state() {
                    WorkerState::Running => break,
                    WorkerState::Faulted | WorkerState::Stopping | WorkerState::Invalid(_) => {
                        bail!("slot {}: the worker failed to start", spec.name)
                    }
                    _ => {}
                }
                let (_, child) = this.children.last().expect("just pushed");
                if exited(child) {
                    bail!(
                        "slot {}: the worker (pid {}) exited during start-up; run `{} {}` by hand to see why",
                        spec.name,
                        child.pid,
                        bin.display(),
                        super::patch::module_spec(p)
                            .ok()
                            .flatten()
                            .map(|s| s.to_cli_args().join(" "))
                            .unwrap_or_default()
                    );
                }
                if Instant::now() > deadline {
                    bail!(
                        "slot {}: the worker (pid {}) did not reach RUNNING within {} s",
                        spec.name,
                        child.pid,
                        START_TIMEOUT.as_secs()
                    );
                }
                monitor.beat_host();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        this.handle.publish(&patch)?;
        Ok(this)
    }

    /// `Some(message)` when any slot fell back during the render.
    fn check(&mut self) -> Option<String> {
        let stats = self.handle.stats();
        let mut bad = Vec::new();
        for (name, _) in &self.children {
            if let Some(id) = self.handle.slot_id(name)
                && let Some(s) = stats.slot(usize::from(id))
            {
                let snap = s.snapshot();
                if snap.fallback_blocks > 0 {
                    bad.push(format!(
                        "{name}: {} block(s) fell back ({} late, {} ring fault(s))",
                        snap.fallback_blocks, snap.late, snap.ring_faults
                    ));
                }
            }
        }
        (!bad.is_empty()).then(|| format!("the render is not exact: {}", bad.join("; ")))
    }

    /// Kills and reaps every worker (the render is over: nothing to shut down
    /// gracefully, and a custom worker ignoring SIGTERM must not hang the CLI).
    fn stop(&mut self) {
        for (_, c) in &self.children {
            let _ = sys::pidfd_send_signal(c.pidfd.as_fd(), libc::SIGKILL);
        }
        for (_, c) in self.children.drain(..) {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(c.pid), None);
        }
        while self.handle.poll().is_some() {}
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn exited(c: &SpawnedChild) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    matches!(
        waitid(
            Id::PIDFd(c.pidfd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
        ),
        Ok(s) if s != WaitStatus::StillAlive
    )
}
