//! The command line: `slotpool run | check | ctl`. Parsed by clap, then dispatched; exit
//! codes are decided here and nowhere else.
//!
//! Exit codes: 0 success; 1 invalid configuration or a run-time failure of the host;
//! 2 command-line usage error (clap); `ctl` has its own documented codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::audio::device::HostChoice;
use crate::config::{Backend, Config, Launch, LogTarget};
use crate::control::client::{CtlArgs, run_ctl};

/// slotpool: a real-time audio host that runs every DSP module in a supervised worker process.
#[derive(Debug, Parser)]
#[command(name = "slotpool", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host in the foreground: the audio engine on the backend, every slot's
    /// worker supervised (SIGTERM/SIGINT: stop everything and exit; SIGHUP: reload).
    #[command(after_help = "Examples:\n  \
        slotpool run examples/demo.toml\n  \
        slotpool run examples/demo.toml --backend null --record take1.wav\n  \
        slotpool run rig.toml --backend cpal --device hw:1\n  \
        slotpool run rig.toml --backend cpal --host jack   (a build with --features jack)\n\n\
        While it runs: slotpool ctl -c CONFIG status | set SLOT PARAM VALUE | restart NAME | reload")]
    Run {
        /// The configuration file.
        config: PathBuf,
        /// Log as JSON lines instead of human-readable text.
        #[arg(long)]
        log_json: bool,
        /// Audio backend, overriding `[engine] backend`: auto (the device if a stream
        /// opens, else null), cpal (a device, or fail), null (a real-time clock, output
        /// discarded). `offline` is for `slotpool render`.
        #[arg(long, value_name = "auto|cpal|null|offline", value_parser = parse_backend)]
        backend: Option<Backend>,
        /// Output device for cpal, overriding `[engine] device` (see `slotpool devices`).
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
        /// The cpal host: default (ALSA), alsa, or jack (needs the `jack` feature).
        #[arg(long, value_name = "default|alsa|jack", value_parser = HostChoice::parse, default_value = "default")]
        host: HostChoice,
        /// Also write the master output to this WAV file (finished on exit).
        #[arg(long, value_name = "FILE.wav")]
        record: Option<PathBuf>,
    },
    /// Validate a configuration file and print its programs and routes (exit 1 if invalid).
    Check {
        /// The configuration file.
        config: PathBuf,
    },
    /// Control a running host (supervisorctl-like; an interactive shell without a verb).
    Ctl(CtlArgs),
    // audio: `devices` (owned by audio/; see crate::audio::devices)
    /// List the audio hosts (ALSA, JACK) and their devices with default configurations.
    #[command(
        after_help = "Examples:\n  slotpool devices\n  JACK_DEFAULT_SERVER=studio slotpool devices   (a build with --features jack)"
    )]
    Devices,
    // engine: `render` (owned by the engine; see crate::engine::render)
    /// Render the patch offline to a WAV file, through the worker processes (or
    /// in-process with --in-process), as fast as it goes.
    Render(crate::engine::render::RenderArgs),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            log_json,
            backend,
            device,
            host,
            record,
        } => {
            init_logging(log_json);
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!(
                        "slotpool: {} is invalid; nothing was started",
                        config.display()
                    );
                    return ExitCode::from(1);
                }
            };
            let opts = crate::host::RunOptions {
                backend,
                device,
                host,
                record,
            };
            match crate::host::run(cfg, &opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                let mut out = std::io::stdout().lock();
                let _ = write_check(&mut out, &c);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!(
                    "slotpool: {} is invalid ({} error(s))",
                    config.display(),
                    e.0.len()
                );
                ExitCode::from(1)
            }
        },
        Command::Ctl(args) => ExitCode::from(u8::try_from(run_ctl(args)).unwrap_or(1)),
        // audio: `devices`
        Command::Devices => {
            print!("{}", crate::audio::devices::listing());
            ExitCode::SUCCESS
        }
        // engine: `render` (owned by the engine)
        Command::Render(args) => match crate::engine::render::run(&args) {
            Ok(r) => {
                if !args.quiet {
                    eprintln!(
                        "rendered {} frames to {} in {:.2} s ({} worker process(es))",
                        r.frames,
                        args.output.display(),
                        r.elapsed.as_secs_f64(),
                        r.workers
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("slotpool render: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    match s {
        "auto" => Ok(Backend::Auto),
        "cpal" => Ok(Backend::Cpal),
        "null" => Ok(Backend::Null),
        "offline" => Ok(Backend::Offline),
        _ => Err(format!(
            "'{s}' is not a backend: auto, cpal, null or offline"
        )),
    }
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLOTPOOL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `check`'s realtime line: what the audio thread and the slot workers ask for.
fn realtime_line(e: &crate::config::EngineConfig) -> String {
    use crate::config::WorkerRealtime;
    let audio = match e.realtime {
        Some(p) => format!("audio thread SCHED_FIFO {p}"),
        None => "audio thread at normal priority".to_string(),
    };
    let workers = match (e.worker_realtime, e.realtime) {
        (WorkerRealtime::Off, _) => "slot workers at normal priority".to_string(),
        (WorkerRealtime::Priority(p), _) => format!("slot workers SCHED_FIFO {p}"),
        (WorkerRealtime::BelowAudio, Some(p)) => format!(
            "slot workers one below the audio thread (SCHED_FIFO {}; under JACK, one below \
             the server's process thread)",
            p.saturating_sub(1).max(1)
        ),
        (WorkerRealtime::BelowAudio, None) => {
            "slot workers one below the audio thread (normal priority unless the audio \
             server makes it real-time, as JACK does)"
                .to_string()
        }
    };
    let period =
        std::time::Duration::from_secs_f64(f64::from(e.block_frames) / f64::from(e.sample_rate));
    let (soft, hard) = crate::supervise::sched::rttime_limits(period, None);
    let bound = if e.worker_realtime == WorkerRealtime::Off {
        String::new()
    } else {
        format!(
            ", RLIMIT_RTTIME {}/{} ms when real-time",
            soft / 1000,
            hard / 1000
        )
    };
    format!("{audio}; {workers}{bound}")
}

/// What `slotpool check` prints for a valid config.
pub fn write_check(out: &mut impl Write, c: &Config) -> std::io::Result<()> {
    writeln!(out, "{}: OK", c.path.display())?;
    let e = &c.engine;
    writeln!(
        out,
        "engine: {} Hz, {} frames, {} channel(s), backend {:?}, deadline {:.0}% of the block",
        e.sample_rate,
        e.block_frames,
        e.channels,
        e.backend,
        e.deadline * 100.0
    )?;
    writeln!(out, "realtime: {}", realtime_line(e))?;
    writeln!(out, "logs: {}", c.log_dir().display())?;
    writeln!(out, "programs ({}):", c.programs.len())?;
    for p in &c.programs {
        let what = match (&p.launch, &p.slot) {
            (Launch::Module(m), _) => format!("slot, module {m}"),
            (Launch::Command { program, args }, slot) => {
                let kind = if slot.is_some() {
                    "slot, custom worker"
                } else {
                    "program"
                };
                format!("{kind}: {program} {}", args.join(" "))
                    .trim_end()
                    .to_string()
            }
        };
        let target = |t: &LogTarget| match t {
            LogTarget::Auto => "AUTO".to_string(),
            LogTarget::Null => "/dev/null".to_string(),
            LogTarget::File(p) => p.display().to_string(),
        };
        writeln!(out, "  {} ({what})", p.name)?;
        writeln!(
            out,
            "    instances {}, autostart {}, autorestart {:?}, startsecs {}, startretries {}, stopwaitsecs {}, priority {}",
            p.instance_names().collect::<Vec<_>>().join(" "),
            p.autostart,
            p.autorestart,
            p.startsecs.as_secs(),
            p.startretries,
            p.stopwaitsecs.as_secs(),
            p.priority
        )?;
        writeln!(
            out,
            "    stdout {}, stderr {}",
            target(&p.stdout.target),
            target(&p.stderr.target)
        )?;
        if let Some(s) = &p.slot {
            writeln!(
                out,
                "    mode {:?}, fallback {:?}, hang_timeout {} ms, params {:?}",
                s.mode,
                s.fallback,
                s.hang_timeout.as_millis(),
                s.params
            )?;
        }
    }
    writeln!(out, "routes ({}):", c.routes.len())?;
    for r in &c.routes {
        let chans = if r.channels.is_empty() {
            String::new()
        } else {
            format!(", channels {:?}", r.channels)
        };
        writeln!(out, "  {} -> {} (gain {}{chans})", r.from, r.to, r.gain)?;
    }
    Ok(())
}
