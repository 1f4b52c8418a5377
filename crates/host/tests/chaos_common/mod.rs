//! Shared harness of the chaos tests (crates/host/tests/chaos_*.rs): the real `slotpool`
//! binary in a fresh temp directory, its JSON log read back with the host's own
//! timestamps, /proc scans, a watchdog, and the CI/soak switch.
//!
//! `SLOTPOOL_SOAK=1` selects the long version of every chaos test (`make soak`).

#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_slotpool");

/// True under `make soak` (`SLOTPOOL_SOAK=1`): the long version of each test.
pub fn soak() -> bool {
    std::env::var_os("SLOTPOOL_SOAK").is_some_and(|v| v != "0" && !v.is_empty())
}

/// `ci` normally, `long` under `SLOTPOOL_SOAK=1`.
pub fn pick<T>(ci: T, long: T) -> T {
    if soak() { long } else { ci }
}

/// Aborts the process if the test that holds it runs past `limit`; disarmed on drop.
#[must_use = "the watchdog is disarmed when dropped: bind it (`let _dog = ...`)"]
pub struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

pub fn watchdog(limit: Duration) -> Watchdog {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&done);
    std::thread::spawn(move || {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            // Relaxed: a stop flag, nothing else is published through it.
            if flag.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("watchdog: test exceeded {limit:?}; aborting");
        std::process::abort();
    });
    Watchdog(done)
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Relaxed: see above.
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A small xorshift generator; the seed is printed so a run can be replayed
/// (`SLOTPOOL_CHAOS_SEED=N`).
pub struct Rng(u64);

impl Rng {
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("SLOTPOOL_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        println!("{test}: SLOTPOOL_CHAOS_SEED={seed}");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A host running `slotpool run h.toml` in `dir`, logging JSON to `host.log`.
pub struct Host {
    pub child: Child,
    pub dir: std::path::PathBuf,
}

/// Writes `h.toml` in `dir` (log dir, control socket inside it; `supervisor` lines are
/// added to the `[supervisor]` table) and starts the host on it.
pub fn write_config(dir: &Path, supervisor: &str, body: &str) {
    let sock = dir.join("ctl/h.sock");
    let cfg = format!(
        "[supervisor]\nlog_dir = \"logs\"\n{supervisor}\n[control]\nsocket = \"{}\"\n{body}",
        sock.display()
    );
    fs::write(dir.join("h.toml"), cfg).unwrap();
}

impl Host {
    /// Starts the host on the `h.toml` already in `dir`; the log is appended to.
    pub fn start_in(dir: &Path) -> Host {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("host.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", "h.toml", "--log-json"])
            .current_dir(dir)
            .env("XDG_RUNTIME_DIR", dir)
            .env("XDG_STATE_HOME", dir)
            .env("SLOTPOOL_LOG", "debug")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Host {
            child,
            dir: dir.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// (seconds of the day, message) of every log line.
    pub fn log(&self) -> Vec<(f64, String)> {
        let text = fs::read_to_string(self.dir.join("host.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let ts = v["timestamp"].as_str().unwrap_or("");
                let msg = v["fields"]["message"].as_str().unwrap_or("").to_string();
                (seconds_of_day(ts), msg)
            })
            .collect()
    }

    pub fn lines_with(&self, needle: &str) -> Vec<(f64, String)> {
        self.log()
            .into_iter()
            .filter(|(_, m)| m.contains(needle))
            .collect()
    }

    pub fn wait_for(&self, needle: &str, count: usize, limit: Duration) -> Vec<(f64, String)> {
        let start = Instant::now();
        loop {
            let hits = self.lines_with(needle);
            if hits.len() >= count {
                return hits;
            }
            assert!(
                start.elapsed() < limit,
                "waited {limit:?} for {count} × {needle:?}; log tail:\n{}",
                tail(
                    &fs::read_to_string(self.dir.join("host.log")).unwrap_or_default(),
                    40
                )
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the host to exit; its exit code (None: killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                start.elapsed() < limit,
                "host did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `slotpool ctl -s SOCK ARGS…`, which must succeed.
    pub fn ctl(&self, args: &[&str]) {
        let st = Command::new(BIN)
            .args(["ctl", "-s"])
            .arg(self.dir.join("ctl/h.sock"))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "slotpool ctl {args:?} failed: {st}");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn seconds_of_day(ts: &str) -> f64 {
    // 2026-11-22T04:38:09.887130Z
    let t = ts
        .split('T')
        .nth(1)
        .unwrap_or("0:0:0")
        .trim_end_matches('Z');
    let mut parts = t.split(':').map(|p| p.parse::<f64>().unwrap_or(0.0));
    let (h, m, s) = (
        parts.next().unwrap_or(0.0),
        parts.next().unwrap_or(0.0),
        parts.next().unwrap_or(0.0),
    );
    h * 3600.0 + m * 60.0 + s
}

/// `b - a` in seconds across midnight.
pub fn span(a: f64, b: f64) -> f64 {
    let d = b - a;
    if d < 0.0 { d + 86_400.0 } else { d }
}

/// Every pid in /proc with its parsed `stat` fields after the command name
/// (state, ppid, ...).
pub fn processes() -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let rest = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        out.push((p, rest));
    }
    out
}

/// Children of `pid` with their state letter (`Z` = zombie).
pub fn children_of(pid: i32) -> Vec<(i32, String)> {
    processes()
        .into_iter()
        .filter(|(_, f)| f.get(1).and_then(|pp| pp.parse::<i32>().ok()) == Some(pid))
        .map(|(p, f)| (p, f[0].clone()))
        .collect()
}

/// The `KEY=value` entries of `pid`'s environment (empty if it cannot be read).
pub fn environment(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

/// Live (non-zombie) processes whose environment holds `marker` (a `KEY=value`).
pub fn marked_processes(marker: &str) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, f)| f.first().map(String::as_str) != Some("Z"))
        .filter(|(p, _)| environment(*p).iter().any(|kv| kv == marker))
        .map(|(p, _)| p)
        .collect()
}

/// Entries of /dev/shm whose name mentions slotpool (there must never be any: regions
/// are memfds).
pub fn shm_entries() -> Vec<String> {
    fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // A JACK server beside the tests (CI's is named `slotpool-ci`) keeps its
                // own `jack_*` files there; they are not ours.
                .filter(|n| n.to_ascii_lowercase().contains("slotpool") && !n.starts_with("jack"))
                .collect()
        })
        .unwrap_or_default()
}

pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of `pid` in KiB (VmRSS).
pub fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The `q`-quantile (0..=1) of `v` (sorted in place), nearest rank.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Writes `name value…` lines to `$SLOTPOOL_CHAOS_OUT/<file>` when that directory is
/// set (the soak script collects them for docs/RELIABILITY.md; `slotpool-report` draws
/// the plots from them), followed by `unix_time SECS` and `loadavg L1 L5 L15` (from
/// /proc/loadavg) so every plot can say when and under what load its data was taken.
pub fn record(file: &str, lines: &[String]) {
    if let Some(dir) = std::env::var_os("SLOTPOOL_CHAOS_OUT") {
        let dir = Path::new(&dir);
        let _ = fs::create_dir_all(dir);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let load = fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into());
        let mut text = lines.join("\n") + "\n";
        text.push_str(&format!("unix_time {unix}\nloadavg {load}\n"));
        let _ = fs::write(dir.join(file), text);
    }
}
