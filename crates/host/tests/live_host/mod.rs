//! Shared harness of the live end-to-end tests (run_live.rs, chaos_engine.rs,
//! rt_workers.rs; the worker binary for the other end-to-end tests too): a real
//! `slotpool run --backend null [--record out.wav]` in a fresh directory with its own
//! control socket, read through `slotpool ctl status --json`, stopped with SIGINT and
//! its recording read back with hound.
//!
//! The binaries are this build's (debug under `cargo test`), or those in
//! `$SLOTPOOL_CHAOS_BIN_DIR` (scripts/soak.sh builds release binaries and points it at
//! them). The worker is built once if missing.

#![allow(dead_code)]

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_slotpool");

/// The `slotpool` and `slotpool-worker` binaries the tests run.
pub fn bins() -> &'static (PathBuf, PathBuf) {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SLOTPOOL_CHAOS_BIN_DIR") {
            let dir = PathBuf::from(dir);
            let pair = (dir.join("slotpool"), dir.join("slotpool-worker"));
            for b in [&pair.0, &pair.1] {
                assert!(
                    b.exists(),
                    "SLOTPOOL_CHAOS_BIN_DIR: {} does not exist; build it with \
                     `cargo build --release -p slotpool-host --bin slotpool -p slotpool-worker --bin slotpool-worker`",
                    b.display()
                );
            }
            println!("live host: binaries from {}", dir.display());
            return pair;
        }
        (PathBuf::from(BIN), worker_bin().to_path_buf())
    })
}

/// The `slotpool-worker` binary next to this build's `slotpool`, built once if it is
/// missing (`cargo test -p slotpool-host` does not build other packages' binaries).
pub fn worker_bin() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = Path::new(BIN).with_file_name("slotpool-worker");
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = Command::new(cargo)
                .args(["build", "-p", "slotpool-worker", "--bin", "slotpool-worker"])
                .status()
                .expect("run cargo to build slotpool-worker")
                .success();
            assert!(ok, "building slotpool-worker failed");
        }
        path
    })
}

/// A running `slotpool run --backend null [--record out.wav]` in a fresh directory.
pub struct Host {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Channels of the recording (the config's `[engine] channels`); `None`: no
    /// recording.
    channels: Option<usize>,
    /// When the host process was started (its audio starts a little later).
    pub started: Instant,
}

impl Host {
    /// Starts the host on `config` (everything but `[control]` and `[supervisor]`),
    /// recording `channels` channels.
    pub fn start(config: &str, channels: usize) -> Host {
        Host::launch(config, &[], Some(channels))
    }

    /// Starts the host on `config` without a recording, run through `wrapper` (a
    /// command and its arguments that execs the rest, e.g. `prlimit --rtprio=0`; empty
    /// for none).
    pub fn start_wrapped(config: &str, wrapper: &[&str]) -> Host {
        Host::launch(config, wrapper, None)
    }

    fn launch(config: &str, wrapper: &[&str], channels: Option<usize>) -> Host {
        let dir = tempfile::tempdir().unwrap();
        // The control socket must live in a directory only we can enter.
        let sock_dir = dir.path().join("ctl");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&sock_dir)
            .unwrap();
        let text = format!(
            "[control]\nsocket = \"{}\"\n[supervisor]\nlog_dir = \"{}\"\n{config}",
            sock_dir.join("ctl.sock").display(),
            dir.path().join("logs").display()
        );
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        let bin = bins().0.as_os_str();
        let (exe, pre) = match wrapper.split_first() {
            Some((w, rest)) => (std::ffi::OsStr::new(*w), rest),
            None => (bin, &[][..]),
        };
        let mut cmd = Command::new(exe);
        cmd.args(pre);
        if !wrapper.is_empty() {
            cmd.arg(bin);
        }
        cmd.args(["run", "p.toml", "--backend", "null"]);
        if channels.is_some() {
            cmd.args(["--record", "out.wav"]);
        }
        let child = cmd
            .current_dir(dir.path())
            .env("SLOTPOOL_WORKER_BIN", &bins().1)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("host.log")).unwrap())
            .spawn()
            .unwrap();
        Host {
            dir,
            child: Some(child),
            channels,
            started: Instant::now(),
        }
    }

    /// The host's directory (its config is `p.toml` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `slotpool ctl -s SOCKET ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(&bins().0)
            .arg("ctl")
            .arg("-s")
            .arg(self.dir.path().join("ctl").join("ctl.sock"))
            .args(args)
            .output()
            .unwrap()
    }

    /// `ctl status --json`, if the host answers.
    pub fn status(&self) -> Option<Value> {
        serde_json::from_slice(&self.ctl(&["status", "--json"]).stdout).ok()
    }

    /// A status that must be there.
    pub fn status_now(&self) -> Value {
        self.status()
            .unwrap_or_else(|| panic!("no status; host log:\n{}", self.log()))
    }

    /// The status entry of program instance `name` (`prog:0`).
    pub fn program(&self, name: &str) -> Option<Value> {
        find(&self.status()?, name).cloned()
    }

    /// Waits (generously) until `pred` holds for the status of `name`.
    pub fn wait_for(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(p) = self.program(name)
                && pred(&p)
            {
                return p;
            }
            assert!(
                Instant::now() < until,
                "{name} never became {what}; status: {:?}\nhost log:\n{}",
                self.status(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `name` is RUNNING with its blocks in use.
    pub fn wait_up(&self, name: &str) -> Value {
        self.wait_for(name, "RUNNING with its blocks in use", up)
    }

    /// The host's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    /// Waits (generously) until the host's log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        let until = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < until,
                "the host never logged {needle:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, wait for exit 0 with no panic in the log, return the recording
    /// (interleaved frames) and the log.
    pub fn finish(mut self) -> (Vec<f32>, String) {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let status = child.wait().unwrap();
        let log = self.log();
        assert!(status.success(), "host exited with {status}; log:\n{log}");
        assert!(!log.contains("panicked"), "the host panicked:\n{log}");
        let channels = self
            .channels
            .expect("finish() reads the recording: use Host::start");
        let wav = hound::WavReader::open(self.dir.path().join("out.wav")).unwrap();
        assert_eq!(wav.spec().channels as usize, channels);
        let samples = wav.into_samples::<f32>().map(Result::unwrap).collect();
        (samples, log)
    }
}

impl Drop for Host {
    /// SIGINT (the host stops its workers in order), SIGKILL after 15 s.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let t0 = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(15) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The entry of program instance `name` in a status.
pub fn find<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["programs"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// RUNNING, its blocks in use, with a pid.
pub fn up(p: &Value) -> bool {
    p["state"] == "RUNNING" && p["link"] == "up" && p["pid"].as_u64().is_some()
}

/// Sends a signal; a process that is already gone is not an error.
pub fn signal(pid: u64, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Per block of `frames` frames, the RMS of channel `ch` of interleaved `channels`.
pub fn block_rms(samples: &[f32], frames: usize, channels: usize, ch: usize) -> Vec<f64> {
    samples
        .chunks_exact(frames * channels)
        .map(|b| {
            let s: f64 = (0..frames)
                .map(|k| f64::from(b[k * channels + ch]).powi(2))
                .sum();
            (s / frames as f64).sqrt()
        })
        .collect()
}
