//! The engine against JACK2, side by side in one run, on a real-time clock.
//!
//! - **ours**: `EngineRt` driven by the null backend (a `clock_nanosleep` TIMER_ABSTIME
//!   thread, SCHED_FIFO 70 when permitted) with N real `slotpool-worker --module
//!   passthrough` processes, spawned by the supervisor's spawner on sealed memfd
//!   regions, as `slotpool render` does. Cycle time = the engine's own histogram
//!   (entry to exit of `process`).
//! - **JACK2**: `jackd -d dummy` at the same rate and period with N pass-through
//!   clients (the `jack` crate), each client a process of its own by default (as JACK
//!   clients are in use, and as our workers are), started by a coordinator child of
//!   this bench whose environment names the server; `SLOTPOOL_BENCH_JACK_MODES=threads`
//!   (or `process,threads`) puts all N clients in one process instead, where switching
//!   between them costs a thread switch, not an address-space switch. Two figures:
//!   JACK2's own DSP load (`jack_cpu_load`: the mean, over 32 cycles, of the cycle's
//!   start to the last client's end — the like-for-like of our mean cycle time), and
//!   the span = end of the last client's callback minus the start of the first one,
//!   per cycle (`jack_get_time`, µs; cycles keyed by `jack_last_frame_time`), which
//!   leaves out the server's wake-ups of its clients.
//!   `jack_get_cycle_times().current_usecs` is not used as the start because it is a
//!   DLL estimate that jitters by more than a 64-frame cycle on this VM.
//! - **crash**: SIGKILL the passthrough worker of a 1-slot patch under the clock and
//!   count cycles until its blocks are used again (reap → SlotDown → SlotReset →
//!   respawn on the same region → RUNNING → SlotUp → first good block).
//!
//! Both are measured at 64 and 256 frames (48 kHz), 1/2/4/8/16 workers/clients, fan-out
//! and chain, interleaved (ours, JACK2, ours, JACK2, …) over `ROUNDS` rounds; the
//! report gives medians across rounds of p50/p99/p99.9/max/mean as shares of the
//! period, and the ratio ours mean / JACK2 load both of those medians and per round
//! (median and range of the rounds' side-by-side ratios).
//!
//! `cargo bench -p slotpool-host --bench engine_rt` runs the full matrix (about 4 min);
//! `cargo test --benches` runs a quick pass (one shape, short windows) that only checks
//! that everything runs and produces audio.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use slotpool_host::audio::device::HostChoice;
use slotpool_host::audio::{self, OpenOptions, StreamFormat};
use slotpool_host::config::{Backend, Config};
use slotpool_host::engine::patch::{build_patch, slot_specs};
use slotpool_host::engine::{EngineSettings, FromEngine, Pacing, ToEngine, engine};
use slotpool_host::supervise::limits::LimitPlan;
use slotpool_host::supervise::sched::RtRequest;
use slotpool_host::supervise::spawn::{SpawnSpec, SpawnedChild, spawn};
use slotpool_host::supervise::sys;
use slotpool_ring::{HostRegion, Memfd, Monitor, SlotLayout, WorkerState};

const RATE: u32 = 48_000;
const FIFO_PRIORITY: u8 = 70;
/// The pre-wake window measured beside "off" (`[engine] worker_prewake_us`): about
/// twice this VM's timer wake-up latency (~45 µs).
const PREWAKE_US: u32 = 100;
const JACK_CHILD: &str = "SLOTPOOL_BENCH_JACK";
const JACK_CLIENT: &str = "SLOTPOOL_BENCH_JACK_CLIENT";

#[derive(Clone, Copy, Debug, Default)]
struct Shares {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    /// The mean: the like-for-like of JACK2's DSP load (`jack_cpu_load`), which is a mean
    /// cycle time over recent cycles as a share of the period.
    mean: f64,
}

/// Percent of the period, from sorted cycle times in ns.
fn shares(sorted: &[u64], period_ns: u64) -> Shares {
    let q = |p: f64| {
        let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i] as f64 / period_ns as f64 * 100.0
    };
    let sum: u64 = sorted.iter().sum();
    Shares {
        p50: q(0.5),
        p99: q(0.99),
        p999: q(0.999),
        max: q(1.0),
        mean: sum as f64 / sorted.len() as f64 / period_ns as f64 * 100.0,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_shares(v: &[Shares]) -> Shares {
    Shares {
        p50: median(v.iter().map(|s| s.p50).collect()),
        p99: median(v.iter().map(|s| s.p99).collect()),
        p999: median(v.iter().map(|s| s.p999).collect()),
        max: median(v.iter().map(|s| s.max).collect()),
        mean: median(v.iter().map(|s| s.mean).collect()),
    }
}

/// The `slotpool-worker` binary of this build (same profile dir), built if missing.
fn worker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLOTPOOL_WORKER_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap(); // …/<profile>/deps/x → …/<profile>
    let path = dir.join("slotpool-worker");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let release = dir.ends_with("release");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "slotpool-worker", "--bin", "slotpool-worker"]);
        if release {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "building slotpool-worker failed"
        );
    }
    path
}

/// How ours is configured for one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Variant {
    /// `[engine] wait_spin_us`, `None` for the default.
    spin: Option<u32>,
    /// `[engine] worker_prewake_us` (0: off, the default).
    prewake: u32,
}

impl Variant {
    const DEFAULT: Variant = Variant {
        spin: None,
        prewake: 0,
    };
}

fn patch_toml(frames: u32, n: usize, chain: bool, v: Variant) -> String {
    let mut c = format!("[engine]\nsample_rate = {RATE}\nblock_frames = {frames}\nchannels = 1\n");
    if let Some(us) = v.spin {
        c += &format!("wait_spin_us = {us}\n");
    }
    c += &format!("worker_prewake_us = {}\n", v.prewake);
    for i in 0..n {
        c += &format!(
            "[program.p{i}]\nmodule = \"passthrough\"\nstdout = \"/dev/null\"\nstderr = \"/dev/null\"\n"
        );
    }
    for i in 0..n {
        let from = if chain && i > 0 {
            format!("p{}:0", i - 1)
        } else {
            "input".into()
        };
        c += &format!("[[route]]\nfrom = \"{from}\"\nto = \"p{i}:0\"\n");
        if !chain || i + 1 == n {
            c += &format!("[[route]]\nfrom = \"p{i}:0\"\nto = \"output\"\n");
        }
    }
    c
}

struct Slot {
    name: String,
    region: HostRegion<Memfd>,
    monitor: Monitor,
    child: Option<SpawnedChild>,
}

/// Our engine on the null backend with `n` worker processes.
struct Ours {
    config: Config,
    handle: slotpool_host::engine::EngineHandle,
    slots: Vec<Slot>,
    running: Option<audio::Running>,
    bin: PathBuf,
}

impl Ours {
    fn start(frames: u32, n: usize, chain: bool, v: Variant, bin: &Path) -> Ours {
        let config = Config::parse(&patch_toml(frames, n, chain, v), Path::new("bench.toml"))
            .unwrap_or_else(|e| panic!("bench config: {e:?}"));
        let settings = EngineSettings::from_config(&config.engine, Pacing::RealTime);
        let (rt, mut handle) = engine(settings);
        let mut this_slots = Vec::new();
        for spec in slot_specs(&config).unwrap() {
            let layout = SlotLayout {
                channels_in: spec.channels_in,
                channels_out: spec.channels_out,
                block_frames: frames,
                audio_capacity: 4,
                command_capacity: 64,
                event_capacity: 64,
            };
            let region = HostRegion::create(&spec.name, layout).unwrap();
            handle
                .attach(&spec, region.host_end().unwrap(), region.monitor())
                .unwrap();
            let monitor = region.monitor();
            this_slots.push(Slot {
                name: spec.name.clone(),
                region,
                monitor,
                child: None,
            });
        }
        let mut ours = Ours {
            config,
            handle,
            slots: this_slots,
            running: None,
            bin: bin.to_path_buf(),
        };
        for i in 0..ours.slots.len() {
            ours.spawn(i);
        }
        for i in 0..ours.slots.len() {
            ours.wait_running(i);
        }
        ours.handle
            .publish(&build_patch(&ours.config).unwrap())
            .unwrap();
        let opts = OpenOptions {
            format: StreamFormat::from_engine(&ours.config.engine),
            backend: Backend::Null,
            device: None,
            host: HostChoice::Default,
            realtime: Some(FIFO_PRIORITY),
        };
        let mut notice = String::new();
        ours.running = Some(audio::open(&opts, Box::new(rt), &mut notice).unwrap());
        ours
    }

    fn spawn(&mut self, i: usize) {
        let child = self.start_worker(i, false);
        self.slots[i].child = Some(child);
    }

    /// Starts a worker for slot `i`; with `standby` it parks on its go pipe.
    fn start_worker(&self, i: usize, standby: bool) -> SpawnedChild {
        let slot = &self.slots[i];
        let program = slot.name.split(':').next().unwrap();
        let program = self.config.program(program).unwrap().clone();
        spawn(&SpawnSpec {
            program: &program,
            instance: &slot.name,
            worker_bin: &self.bin,
            pipe_stdout: false,
            pipe_stderr: false,
            limits: &LimitPlan::default(),
            region_fd: Some(slot.region.fd().as_raw_fd()),
            sample_rate: Some(RATE),
            standby,
            // As `slotpool run` does by default: SCHED_FIFO one below the audio thread,
            // bounded by RLIMIT_RTTIME; `SLOTPOOL_BENCH_WORKER_RT=0` for normal priority.
            rt: worker_rt(),
            prewake_us: self.config.prewake_us(&program),
        })
        .unwrap()
    }

    fn wait_running(&self, i: usize) {
        let t0 = Instant::now();
        while self.slots[i].monitor.worker_state() != WorkerState::Running {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "worker {} never ran",
                self.slots[i].name
            );
            self.slots[i].monitor.beat_host();
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    fn realtime(&self) -> String {
        self.running
            .as_ref()
            .map(|r| r.stats().realtime().to_string())
            .unwrap_or_default()
    }

    /// The workers' CPU time so far, summed (ns; `/proc/PID/schedstat`).
    fn worker_cpu_ns(&self) -> u64 {
        self.slots
            .iter()
            .filter_map(|s| s.child.as_ref())
            .filter_map(|c| std::fs::read_to_string(format!("/proc/{}/schedstat", c.pid)).ok())
            .filter_map(|t| t.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Runs for `secs` after a warm-up; cycle times as shares of the period, cycles,
    /// late blocks, and the workers' CPU time per cycle per worker as a share of the
    /// period (what pre-wake's polling costs shows here).
    fn measure(&mut self, secs: f64) -> (Shares, u64, u64, f64) {
        std::thread::sleep(Duration::from_millis(300));
        let stats = self.handle.stats().clone();
        stats.cycle_time.clear();
        let late0: u64 = self.late();
        let cpu0 = self.worker_cpu_ns();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let cpu = self.worker_cpu_ns().saturating_sub(cpu0);
        let h = &stats.cycle_time;
        let pct = |v: Option<u64>| v.unwrap_or(0) as f64 / stats.period_ns as f64 * 100.0;
        let s = Shares {
            p50: pct(h.percentile(0.5)),
            p99: pct(h.percentile(0.99)),
            p999: pct(h.percentile(0.999)),
            max: pct(Some(h.max())),
            mean: h.mean().unwrap_or(0.0) / stats.period_ns as f64 * 100.0,
        };
        let per =
            (h.count() as f64 * stats.period_ns as f64 * self.slots.len().max(1) as f64).max(1.0);
        (s, h.count(), self.late() - late0, cpu as f64 / per * 100.0)
    }

    fn late(&self) -> u64 {
        let stats = self.handle.stats();
        (0..self.slots.len())
            .filter_map(|i| {
                let id = self.handle.slot_id(&self.slots[i].name)?;
                Some(stats.slot(usize::from(id))?.snapshot().late)
            })
            .sum()
    }

    /// SIGKILLs slot 0's worker and runs the supervisor's replacement sequence; the
    /// cycles from the kill to the first good block again, and where they went.
    fn crash(&mut self, standby: bool) -> (u64, String) {
        // A standby is parked before the kill (as the supervisor keeps one), given time
        // to get through its start-up.
        let parked = standby.then(|| {
            let c = self.start_worker(0, true);
            std::thread::sleep(Duration::from_millis(300));
            c
        });
        let stats = self.handle.stats().clone();
        let id = self.handle.slot_id(&self.slots[0].name).unwrap();
        let slot_stats = stats.slot(usize::from(id)).unwrap();
        let good0 = slot_stats.snapshot().good_blocks;
        let cycles = || stats.cycle_time.count();
        let c0 = cycles();
        let t0 = Instant::now();
        let child = self.slots[0].child.take().unwrap();
        sys::pidfd_send_signal(child.pidfd.as_fd(), libc::SIGKILL).unwrap();
        nix::sys::wait::waitid(
            nix::sys::wait::Id::PIDFd(child.pidfd.as_fd()),
            nix::sys::wait::WaitPidFlag::WEXITED,
        )
        .unwrap();
        let reaped = (cycles() - c0, t0.elapsed());
        self.handle.send(ToEngine::SlotDown { slot: id }).unwrap();
        loop {
            match self.handle.poll() {
                Some(FromEngine::SlotReset { slot }) if slot == id => break,
                Some(_) => {}
                None => std::thread::sleep(Duration::from_micros(50)),
            }
        }
        let reset = (cycles() - c0, t0.elapsed());
        match parked {
            Some(c) => {
                let go = c.go.as_ref().expect("a standby has a go pipe");
                nix::unistd::write(go, b"g").unwrap();
                self.slots[0].child = Some(c);
            }
            None => self.spawn(0),
        }
        self.wait_running(0);
        let running = (cycles() - c0, t0.elapsed());
        self.handle.send(ToEngine::SlotUp { slot: id }).unwrap();
        while slot_stats.snapshot().good_blocks == good0 {
            assert!(t0.elapsed() < Duration::from_secs(20), "never producing");
            std::thread::sleep(Duration::from_micros(50));
        }
        let total = cycles() - c0;
        let detail = format!(
            "reaped {}c/{:?}, reset {}c/{:?}, RUNNING {}c/{:?}, good {}c/{:?}",
            reaped.0,
            reaped.1,
            reset.0,
            reset.1,
            running.0,
            running.1,
            total,
            t0.elapsed()
        );
        (total, detail)
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
        for s in &mut self.slots {
            if let Some(c) = s.child.take() {
                let _ = sys::pidfd_send_signal(c.pidfd.as_fd(), libc::SIGKILL);
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(c.pid), None);
            }
        }
        while self.handle.poll().is_some() {}
    }
}

/// A jackd we started; killed and reaped on drop.
struct Jackd(Child, String);

impl Drop for Jackd {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: a killed jackd leaves its entry in JACK2's shared server
        // registry, and after a few of those jackd refuses with "Too many servers
        // already active". SIGKILL only if it has not exited after 5 s.
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while matches!(self.0.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_jackd(frames: u32) -> Result<Jackd, String> {
    // A fixed name per period: JACK2 reclaims a dead server's registry entry only when
    // a server of the same name starts again (per-pid names leak entries until jackd
    // refuses with "Too many servers already active").
    let name = format!("slotpool-bench-{frames}");
    let child = Command::new("jackd")
        .args(["-R", "-P", "70", "-n", &name, "-d", "dummy", "-r", "48000"])
        .args(["-p", &frames.to_string(), "-C", "1", "-P", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot start jackd ({e}): scripts/install-deps.sh installs jackd2")
        })?;
    let server = Jackd(child, name);
    let ok = Command::new("jack_wait")
        .args(["-s", &server.1, "-w", "-t", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(server)
    } else {
        Err(format!("jackd -n {} did not come up within 20 s", server.1))
    }
}

/// (frames, chain, workers, ours' variant, JACK2's client placement).
type RatioKey = (u32, bool, usize, Variant, JackMode);

/// How JACK2's pass-through clients are hosted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum JackMode {
    /// One process per client.
    Processes,
    /// All clients in one process.
    Threads,
}

impl JackMode {
    fn label(self) -> &'static str {
        match self {
            JackMode::Processes => "processes",
            JackMode::Threads => "threads",
        }
    }
}

/// Runs the JACK measurement in a child process (whose environment names the server).
fn jack(
    server: &Jackd,
    n: usize,
    chain: bool,
    secs: f64,
    mode: JackMode,
) -> Result<(Shares, u64, f64), String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(JACK_CHILD, format!("{n},{chain},{secs}"))
        .env(
            "SLOTPOOL_BENCH_JACK_THREADS",
            if mode == JackMode::Threads { "1" } else { "0" },
        )
        .env("JACK_DEFAULT_SERVER", &server.1)
        .env("JACK_NO_START_SERVER", "1")
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("jack-result "))
        .ok_or_else(|| {
            format!(
                "the JACK child printed no result: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
    Ok((
        Shares {
            p50: v[0],
            p99: v[1],
            p999: v[2],
            max: v[3],
            mean: v[4],
        },
        v[5] as u64,
        v[6],
    ))
}

/// Per-cycle records of one pass-through client: (frame time, start µs, end µs).
type CycleLog = rtrb::Consumer<(u32, u64, u64)>;

/// Opens and activates the pass-through client `pass{i}`: its callback copies `in` to
/// `out` and logs its own start and end (`jack_get_time`).
fn pass_client(
    i: usize,
) -> (
    jack::AsyncClient<(), impl jack::ProcessHandler + use<>>,
    CycleLog,
) {
    let (client, _) = jack::Client::new(&format!("pass{i}"), jack::ClientOptions::NO_START_SERVER)
        .expect("JACK client");
    let inp = client
        .register_port("in", jack::AudioIn::default())
        .unwrap();
    let mut out = client
        .register_port("out", jack::AudioOut::default())
        .unwrap();
    let (mut tx, rx) = rtrb::RingBuffer::<(u32, u64, u64)>::new(1 << 18);
    let handler = jack::contrib::ClosureProcessHandler::new(
        move |c: &jack::Client, ps: &jack::ProcessScope| {
            let start = c.time();
            out.as_mut_slice(ps).copy_from_slice(inp.as_slice(ps));
            let _ = tx.push((ps.last_frame_time(), start, c.time()));
            jack::Control::Continue
        },
    );
    (client.activate_async((), handler).unwrap(), rx)
}

/// A client process of the process mode (`SLOTPOOL_BENCH_JACK_CLIENT=i`): one
/// pass-through client, `ready` on stdout once active, then runs until its stdin
/// closes and prints its log, a `rec FRAME START END` line per cycle.
fn jack_client_process(arg: &str) {
    use std::io::{Read, Write};
    let i: usize = arg.parse().unwrap();
    let (client, mut rx) = pass_client(i);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready").unwrap();
    stdout.flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let _ = client.deactivate();
    while let Ok((frame, start, end)) = rx.pop() {
        writeln!(stdout, "rec {frame} {start} {end}").unwrap();
    }
}

/// The JACK child: `n` pass-through clients, fan-out or chain, for `secs`; prints
/// `jack-result p50 p99 p99.9 max mean cycles load` (shares of the period, percent).
///
/// Each client is a process of its own by default, as JACK clients are in use and as
/// our workers are; `SLOTPOOL_BENCH_JACK_THREADS=1` puts all `n` clients in this one
/// process instead (a context switch between them is then a thread switch within one
/// address space, which flatters JACK2 against process workers).
fn jack_child(arg: &str) {
    let mut it = arg.split(',');
    let n: usize = it.next().unwrap().parse().unwrap();
    let chain: bool = it.next().unwrap().parse().unwrap();
    let secs: f64 = it.next().unwrap().parse().unwrap();
    let threads = std::env::var("SLOTPOOL_BENCH_JACK_THREADS").as_deref() == Ok("1");
    // Thread mode: the clients live here. Process mode: one child process per client,
    // and this process only connects ports and reads the server's load (its own client
    // is never activated, so it is not in the graph).
    let mut in_process = Vec::new();
    let mut procs = Vec::new();
    if threads {
        in_process = (0..n).map(pass_client).collect();
    } else {
        use std::io::BufRead;
        for i in 0..n {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .env_remove(JACK_CHILD)
                .env(JACK_CLIENT, i.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a JACK client process");
            let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(
                line.trim(),
                "ready",
                "JACK client process {i} did not start"
            );
            procs.push((child, out));
        }
    }
    let (coord, _) =
        jack::Client::new("coord", jack::ClientOptions::NO_START_SERVER).expect("JACK client");
    for i in 0..n {
        let from = if chain && i > 0 {
            format!("pass{}:out", i - 1)
        } else {
            "system:capture_1".into()
        };
        coord
            .connect_ports_by_name(&from, &format!("pass{i}:in"))
            .unwrap();
        if !chain || i + 1 == n {
            coord
                .connect_ports_by_name(&format!("pass{i}:out"), "system:playback_1")
                .unwrap();
        }
    }
    let period_us = u64::from(coord.buffer_size()) * 1_000_000 / u64::from(coord.sample_rate());
    std::thread::sleep(Duration::from_millis(300));
    // JACK2's own DSP load (percent), sampled every 10 ms through the window and
    // averaged. The server recomputes it every 32 cycles from those cycles' times (first
    // of the cycle to the last client's end, in the default asynchronous mode: the mean,
    // or the maximum when one cycle took 95 % of the period) and smooths it (half the new
    // value, half the old), so one sample is the last few dozen cycles; the average of
    // the samples is the window's.
    let t0 = coord.time();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let (mut load_sum, mut load_n) = (0.0, 0u32);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
        load_sum += f64::from(coord.cpu_load());
        load_n += 1;
    }
    let t1 = coord.time();
    let load = load_sum / f64::from(load_n.max(1));
    // Every client's log: (frame time, start, end) per cycle it ran.
    let mut logs: Vec<Vec<(u32, u64, u64)>> = Vec::new();
    for (client, mut rx) in in_process {
        let _ = client.deactivate();
        let mut log = Vec::new();
        while let Ok(r) = rx.pop() {
            log.push(r);
        }
        logs.push(log);
    }
    for (mut child, out) in procs {
        use std::io::BufRead;
        drop(child.stdin.take());
        let log = out
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                let mut f = l.strip_prefix("rec ")?.split(' ');
                Some((
                    f.next()?.parse().ok()?,
                    f.next()?.parse().ok()?,
                    f.next()?.parse().ok()?,
                ))
            })
            .collect();
        let _ = child.wait();
        logs.push(log);
    }
    // Per cycle (keyed by its frame time): first client's start to last client's end,
    // for the cycles inside the window.
    let mut per_cycle: BTreeMap<u32, (usize, u64, u64)> = BTreeMap::new();
    for (frame, start, end) in logs.into_iter().flatten() {
        if start < t0 || end > t1 {
            continue;
        }
        let e = per_cycle.entry(frame).or_insert((0, u64::MAX, 0));
        e.0 += 1;
        e.1 = e.1.min(start);
        e.2 = e.2.max(end);
    }
    // Only cycles every client ran in (the window's edges are cut).
    let mut times: Vec<u64> = per_cycle
        .values()
        .filter(|(k, _, _)| *k == n)
        .map(|&(_, start, end)| end.saturating_sub(start) * 1000)
        .collect();
    times.sort_unstable();
    assert!(!times.is_empty(), "no complete JACK cycle recorded");
    let s = shares(&times, period_us * 1000);
    println!(
        "jack-result {} {} {} {} {} {} {load}",
        s.p50,
        s.p99,
        s.p999,
        s.max,
        s.mean,
        times.len()
    );
}

/// The workers' scheduling: SCHED_FIFO one below the audio thread unless
/// `SLOTPOOL_BENCH_WORKER_RT=0`.
fn worker_rt() -> Option<RtRequest> {
    (std::env::var("SLOTPOOL_BENCH_WORKER_RT").as_deref() != Ok("0")).then_some(RtRequest {
        priority: FIFO_PRIORITY - 1,
        rttime_soft_us: 200_000,
        rttime_hard_us: 400_000,
    })
}

fn main() {
    if let Ok(arg) = std::env::var(JACK_CLIENT) {
        return jack_client_process(&arg);
    }
    if let Ok(arg) = std::env::var(JACK_CHILD) {
        return jack_child(&arg);
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (frames_set, counts, shapes, secs, rounds): (&[u32], &[usize], &[bool], f64, usize) =
        if full {
            (&[64, 256], &[1, 2, 4, 8, 16], &[false, true], 2.0, 2)
        } else {
            (&[64], &[1, 2], &[false], 0.2, 1)
        };
    // Narrowing for A/B runs: `SLOTPOOL_BENCH_FRAMES=64`, `SLOTPOOL_BENCH_COUNTS=1,8`,
    // `SLOTPOOL_BENCH_ROUNDS=4`;
    // `SLOTPOOL_BENCH_SPINS=0,50` measures ours once per `[engine] wait_spin_us` value,
    // interleaved in each round (default: the config's default only);
    // `SLOTPOOL_BENCH_PREWAKES=0,100` once per `[engine] worker_prewake_us` value
    // (default: 0 and 100, off and on, side by side), crossed with the spins.
    let list = |key: &str| -> Option<Vec<u32>> {
        std::env::var(key).ok().map(|v| {
            v.split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{key}: bad number {x:?}"))
                })
                .collect()
        })
    };
    let frames_env = list("SLOTPOOL_BENCH_FRAMES");
    let counts_env: Option<Vec<usize>> =
        list("SLOTPOOL_BENCH_COUNTS").map(|v| v.into_iter().map(|n| n as usize).collect());
    let rounds = std::env::var("SLOTPOOL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(rounds);
    let frames_set = frames_env.as_deref().unwrap_or(frames_set);
    let counts = counts_env.as_deref().unwrap_or(counts);
    let spins: Vec<Option<u32>> =
        list("SLOTPOOL_BENCH_SPINS").map_or(vec![None], |v| v.into_iter().map(Some).collect());
    let prewakes = list("SLOTPOOL_BENCH_PREWAKES").unwrap_or_else(|| vec![0, PREWAKE_US]);
    let variants: Vec<Variant> = spins
        .iter()
        .flat_map(|&spin| {
            prewakes
                .iter()
                .map(move |&prewake| Variant { spin, prewake })
        })
        .collect();
    sys::reserve_handover_fds().expect("reserve fds 3 and 4 for workers");
    let bin = worker_bin();
    println!(
        "engine_rt: {} mode, {secs} s windows, {rounds} round(s), worker {}",
        if full { "full" } else { "quick" },
        bin.display()
    );
    // `SLOTPOOL_BENCH_JACK_MODES=process,threads`: JACK2's clients as one process each
    // (the default; as JACK clients are in use and as our workers are) and/or as
    // threads of one process, each measured in every round.
    let jack_modes: Vec<JackMode> =
        std::env::var("SLOTPOOL_BENCH_JACK_MODES").map_or(vec![JackMode::Processes], |v| {
            v.split(',')
                .map(|m| match m.trim() {
                    "process" | "processes" => JackMode::Processes,
                    "thread" | "threads" => JackMode::Threads,
                    other => {
                        panic!("SLOTPOOL_BENCH_JACK_MODES: {other:?} is not process or threads")
                    }
                })
                .collect()
        });
    let mut ours_r: BTreeMap<(u32, bool, usize, Variant), Vec<Shares>> = BTreeMap::new();
    // Workers' CPU per cycle per worker, as a share of the period.
    let mut ours_cpu: BTreeMap<(u32, bool, usize, Variant), Vec<f64>> = BTreeMap::new();
    let mut jack_r: BTreeMap<(u32, bool, usize, JackMode), Vec<Shares>> = BTreeMap::new();
    let mut jack_load: BTreeMap<(u32, bool, usize, JackMode), Vec<f64>> = BTreeMap::new();
    // Per round: ours mean / JACK2 load of the same round (side by side).
    let mut round_ratio: BTreeMap<RatioKey, Vec<f64>> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut rt_state = String::new();
    for round in 0..rounds {
        for &frames in frames_set {
            let server = start_jackd(frames);
            if let Err(e) = &server {
                notes.push(format!("JACK2 skipped at {frames} frames: {e}"));
            }
            for &chain in shapes {
                for &n in counts {
                    let mut ours_txt = String::new();
                    let mut ours_means = Vec::new();
                    for &v in &variants {
                        let mut o = Ours::start(frames, n, chain, v, &bin);
                        let (s, cycles, late, cpu) = o.measure(secs);
                        rt_state = o.realtime();
                        assert!(cycles > 0, "the engine ran no cycle");
                        drop(o);
                        ours_r.entry((frames, chain, n, v)).or_default().push(s);
                        ours_cpu.entry((frames, chain, n, v)).or_default().push(cpu);
                        ours_means.push((v, s.mean));
                        let label = v.spin.map_or(String::new(), |us| format!(" spin {us}"));
                        ours_txt += &format!(
                            "ours{label} prewake {} p50 {:.2}% p99 {:.2}% mean {:.2}% worker cpu {cpu:.2}% ({cycles} cycles, {late} late) | ",
                            v.prewake, s.p50, s.p99, s.mean
                        );
                    }
                    let mut jtxt = String::new();
                    for &mode in &jack_modes {
                        let j = server
                            .as_ref()
                            .ok()
                            .map(|srv| jack(srv, n, chain, secs, mode));
                        jtxt += &match j {
                            Some(Ok((js, jc, load))) => {
                                jack_r.entry((frames, chain, n, mode)).or_default().push(js);
                                jack_load
                                    .entry((frames, chain, n, mode))
                                    .or_default()
                                    .push(load);
                                for &(v, mean) in &ours_means {
                                    round_ratio
                                        .entry((frames, chain, n, v, mode))
                                        .or_default()
                                        .push(mean / load);
                                }
                                format!(
                                    "jack ({}) p50 {:.2}% p99 {:.2}% ({jc} cycles, jack_cpu_load {load:.1}%) ",
                                    mode.label(),
                                    js.p50,
                                    js.p99
                                )
                            }
                            Some(Err(e)) => {
                                notes.push(format!("JACK2 {frames}f {n} clients: {e}"));
                                "jack failed ".into()
                            }
                            None => "jack skipped ".into(),
                        };
                    }
                    let shape = if chain { "chain" } else { "fanout" };
                    eprintln!("  round {round} {frames}f {shape} {n:>2}: {ours_txt}{jtxt}");
                }
            }
        }
    }
    // Crash → producing again (64 frames, 1 worker), repeated: a new worker spawned
    // after the reset, and a parked standby sent in after it, alternately.
    let mut crash = Vec::new();
    let mut crash_standby = Vec::new();
    for _ in 0..if full { 7 } else { 1 } {
        for standby in [false, true] {
            let mut o = Ours::start(64, 1, false, Variant::DEFAULT, &bin);
            std::thread::sleep(Duration::from_millis(200));
            let (c, detail) = o.crash(standby);
            let how = if standby { "standby" } else { "spawn" };
            eprintln!("  crash ({how}): {c} periods ({detail})");
            if standby {
                &mut crash_standby
            } else {
                &mut crash
            }
            .push(c as f64);
        }
    }
    println!(
        "\naudio thread: {rt_state}; workers: {}",
        worker_rt().map_or("normal priority".to_string(), |r| format!(
            "SCHED_FIFO {}",
            r.priority
        ))
    );
    println!(
        "\n| frames | shape | N | spin µs | prewake µs | ours p50 | p99 | p99.9 | max | mean | worker CPU | JACK2 clients | JACK2 span p50 | p99 | p99.9 | max | JACK2 DSP load | ours mean / JACK2 load | per round: median [min–max] | ours p50 / JACK2 load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (&(frames, chain, n, variant), v) in &ours_r {
        let o = median_shares(v);
        let cpu = median(ours_cpu[&(frames, chain, n, variant)].clone());
        let shape = if chain { "chain" } else { "fan-out" };
        let spin_txt = variant
            .spin
            .map_or("default".to_string(), |us| us.to_string());
        let prewake = variant.prewake;
        for &mode in &jack_modes {
            let jt = match jack_r.get(&(frames, chain, n, mode)) {
                Some(jv) => {
                    let j = median_shares(jv);
                    let load = median(jack_load[&(frames, chain, n, mode)].clone());
                    let rr = &round_ratio[&(frames, chain, n, variant, mode)];
                    let lo = rr.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = rr.iter().copied().fold(0.0, f64::max);
                    format!(
                        "{:.2} % | {:.2} % | {:.2} % | {:.2} % | {load:.2} % | {:.2} | {:.2} [{lo:.2}–{hi:.2}] | {:.2}",
                        j.p50,
                        j.p99,
                        j.p999,
                        j.max,
                        o.mean / load,
                        median(rr.clone()),
                        o.p50 / load
                    )
                }
                None => "– | – | – | – | – | – | – | –".into(),
            };
            println!(
                "| {frames} | {shape} | {n} | {spin_txt} | {prewake} | {:.2} % | {:.2} % | {:.2} % | {:.2} % | {:.2} % | {cpu:.2} % | {} | {jt} |",
                o.p50,
                o.p99,
                o.p999,
                o.max,
                o.mean,
                mode.label()
            );
        }
    }
    println!(
        "\ncrash → producing again at 64 frames: new worker median {} periods (runs: {:?}); \
         standby median {} periods (runs: {:?})",
        median(crash.clone()),
        crash,
        median(crash_standby.clone()),
        crash_standby
    );
    for n in notes {
        println!("note: {n}");
    }
}
