//! End-to-end supervision with the real `slotpool` binary, real child processes and
//! real signals. Each test arms a watchdog that aborts instead of hanging.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_slotpool");

fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("watchdog: test exceeded {limit:?}; aborting");
        std::process::abort();
    });
}

/// A host running in a fresh temp directory, logging JSON to `host.log`.
struct Host {
    child: Child,
    dir: tempfile::TempDir,
}

impl Host {
    fn start(config_body: &str) -> Host {
        Host::start_with(config_body, tempfile::tempdir().unwrap(), &[])
    }

    fn start_with(config_body: &str, dir: tempfile::TempDir, env: &[(&str, &Path)]) -> Host {
        let sock = dir.path().join("ctl/h.sock");
        let cfg = format!(
            "[supervisor]\nlog_dir = \"logs\"\nspawn_rate = 100000\nspawn_burst = 100000\n[control]\nsocket = \"{}\"\n{config_body}",
            sock.display()
        );
        fs::write(dir.path().join("h.toml"), cfg).unwrap();
        let log = fs::File::create(dir.path().join("host.log")).unwrap();
        let child = Command::new(BIN)
            .args(["run", "h.toml", "--log-json"])
            .current_dir(dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("XDG_STATE_HOME", dir.path())
            .env("SLOTPOOL_LOG", "debug")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Host { child, dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// (seconds of the day, message) of every log line.
    fn log(&self) -> Vec<(f64, String)> {
        let text = fs::read_to_string(self.path().join("host.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let ts = v["timestamp"].as_str().unwrap_or("");
                let msg = v["fields"]["message"].as_str().unwrap_or("").to_string();
                (seconds_of_day(ts), msg)
            })
            .collect()
    }

    fn lines_with(&self, needle: &str) -> Vec<(f64, String)> {
        self.log()
            .into_iter()
            .filter(|(_, m)| m.contains(needle))
            .collect()
    }

    fn wait_for(&self, needle: &str, count: usize, limit: Duration) -> Vec<(f64, String)> {
        let start = Instant::now();
        loop {
            let hits = self.lines_with(needle);
            if hits.len() >= count {
                return hits;
            }
            assert!(
                start.elapsed() < limit,
                "waited {limit:?} for {count} × {needle:?}; log:\n{}",
                fs::read_to_string(self.path().join("host.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pids the host logged as spawned for `instance`.
    fn spawned_pids(&self, instance: &str) -> Vec<i32> {
        self.lines_with(&format!("spawned: '{instance}' with pid "))
            .iter()
            .filter_map(|(_, m)| m.rsplit(' ').next()?.parse().ok())
            .collect()
    }

    fn signal(&self, sig: i32) {
        // SAFETY-free: nix's kill is a safe wrapper.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::try_from(sig).unwrap(),
        )
        .unwrap();
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                start.elapsed() < limit,
                "host did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn seconds_of_day(ts: &str) -> f64 {
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

fn span(a: f64, b: f64) -> f64 {
    let d = b - a;
    if d < 0.0 { d + 86_400.0 } else { d }
}

/// Alive means: exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

fn children_of(pid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if rest.get(1).and_then(|pp| pp.parse::<i32>().ok()) == Some(pid) {
            out.push((p, rest[0].to_string()));
        }
    }
    out
}

fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn false_is_spawned_four_times_then_fatal_about_six_seconds_after_the_first() {
    watchdog(Duration::from_secs(120));
    let mut host = Host::start("[program.f]\ncommand = \"false\"\n");
    let fatal = host.wait_for(
        "gave up: f:0 entered FATAL state",
        1,
        Duration::from_secs(60),
    );
    let spawns = host.lines_with("spawned: 'f:0'");
    assert_eq!(spawns.len(), 4, "{spawns:?}");
    let took = span(spawns[0].0, fatal[0].0);
    assert!(
        (5.9..9.0).contains(&took),
        "FATAL {took:.2} s after the first spawn"
    );
    // Waits of 1, 2 and 3 s between the spawns.
    for (k, want) in [1.0, 2.0, 3.0].iter().enumerate() {
        let gap = span(spawns[k].0, spawns[k + 1].0);
        assert!(
            gap >= want - 0.05 && gap < want + 1.5,
            "gap {k}: {gap:.2} s, want about {want} s"
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(host.lines_with("spawned: 'f:0'").len(), 4, "FATAL is final");
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn stop_kills_a_term_ignoring_program_and_its_grandchild_after_stopwaitsecs() {
    watchdog(Duration::from_secs(120));
    let mut host = Host::start(
        "[program.stubborn]\ncommand = \"sh -c 'trap \\\"\\\" TERM; sleep 1000 & echo grandchild $!; wait'\"\n\
         startsecs = 0\nstopwaitsecs = 2\n",
    );
    host.wait_for("spawned: 'stubborn:0'", 1, Duration::from_secs(30));
    let leader = host.spawned_pids("stubborn:0")[0];
    let out = host.path().join("logs/stubborn_0.stdout.log");
    let start = Instant::now();
    let grandchild: i32 = loop {
        let text = fs::read_to_string(&out).unwrap_or_default();
        if let Some(p) = text
            .strip_prefix("grandchild ")
            .and_then(|r| r.trim().parse().ok())
        {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no grandchild line in {}",
            out.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(alive(leader) && alive(grandchild));
    let stop_at = Instant::now();
    host.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        alive(leader) && alive(grandchild),
        "SIGTERM is ignored: both still run before stopwaitsecs"
    );
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
    assert!(
        stop_at.elapsed() >= Duration::from_secs(2),
        "the host waited stopwaitsecs"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(leader), "the program survived");
    assert!(!alive(grandchild), "the grandchild survived");
    let stopped = host.lines_with("stopped: stubborn:0");
    assert!(stopped[0].1.contains("SIGKILL"), "{stopped:?}");
}

#[test]
fn sigkill_of_the_host_leaves_no_child_alive() {
    watchdog(Duration::from_secs(60));
    let mut host = Host::start("[program.s]\ncommand = \"sleep 1000\"\nnumprocs = 3\n");
    for i in 0..3 {
        host.wait_for(&format!("spawned: 's:{i}'"), 1, Duration::from_secs(30));
    }
    let pids: Vec<i32> = (0..3)
        .flat_map(|i| host.spawned_pids(&format!("s:{i}")))
        .collect();
    assert!(pids.iter().all(|&p| alive(p)));
    host.signal(libc::SIGKILL);
    host.wait_exit(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let left: Vec<i32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "children alive after the host was killed: {left:?}"
    );
}

#[test]
fn thousand_restart_cycles_leave_the_host_fd_count_at_baseline_and_no_zombie() {
    watchdog(Duration::from_secs(240));
    // Exits 0 (unexpected here, so it is restarted) 1000 times, then 1 (expected: stays EXITED).
    let mut host = Host::start(
        "[program.t]\ncommand = \"sh -c 'n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ $n -ge 1000 ] && exit 1; exit 0'\"\n\
         autostart = false\nstartsecs = 0\nexitcodes = [1]\nautorestart = \"unexpected\"\ncrashloop_exits = 100000\n",
    );
    host.wait_for("ready:", 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let baseline = fd_count(host.pid());
    let sock = host.path().join("ctl/h.sock");
    let st = Command::new(BIN)
        .args(["ctl", "-s"])
        .arg(&sock)
        .args(["start", "t"])
        .status()
        .unwrap();
    assert!(st.success());
    host.wait_for(
        "exited: t:0 (exit status 1; expected)",
        1,
        Duration::from_secs(200),
    );
    assert_eq!(host.lines_with("spawned: 't:0'").len(), 1001);
    let start = Instant::now();
    loop {
        let now = fd_count(host.pid());
        if now == baseline {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "host fds {now}, baseline {baseline}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kids = children_of(host.pid());
    assert!(kids.is_empty(), "children (zombies?) left: {kids:?}");
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn a_silent_slot_worker_is_killed_as_hung_and_restarted() {
    watchdog(Duration::from_secs(120));
    // A routed command program is a slot with a custom worker; `sleep` never beats.
    let mut host = Host::start(
        "[program.w]\ncommand = \"sleep 1000\"\nstartsecs = 1\nhang_timeout = \"300ms\"\n\
         [[route]]\nfrom = \"input\"\nto = \"w\"\n",
    );
    host.wait_for("spawned: 'w:0'", 1, Duration::from_secs(30));
    let first = host.spawned_pids("w:0")[0];
    // The region is handed over as fd 3 with the documented environment.
    let env = fs::read(format!("/proc/{first}/environ")).unwrap();
    let env = String::from_utf8_lossy(&env);
    assert!(
        env.contains("SLOTPOOL_REGION_FD=3") && env.contains("SLOTPOOL_SLOT=w:0"),
        "{env}"
    );
    let fd3 = fs::read_link(format!("/proc/{first}/fd/3")).unwrap();
    assert!(
        fd3.to_string_lossy().contains("memfd:"),
        "fd 3 is {}",
        fd3.display()
    );
    let fds: Vec<String> = fs::read_dir(format!("/proc/{first}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        fds.len(),
        5,
        "only stdio, the region and the ready pipe are inherited: {fds:?}"
    );
    // The ready pipe (written once the worker runs) is fd 4, as the environment says.
    assert!(env.contains("SLOTPOOL_READY_FD=4"), "{env}");
    let fd4 = fs::read_link(format!("/proc/{first}/fd/4")).unwrap();
    assert!(
        fd4.to_string_lossy().starts_with("pipe:"),
        "fd 4 is {}",
        fd4.display()
    );
    host.wait_for(
        "worker heartbeat has not advanced",
        1,
        Duration::from_secs(30),
    );
    host.wait_for("spawned: 'w:0'", 2, Duration::from_secs(30));
    assert!(!alive(first), "the hung worker was killed");
    let exited = host.wait_for("exited: w:0", 1, Duration::from_secs(30));
    assert!(
        exited[0].1.contains("hung: no heartbeat for 300 ms"),
        "{exited:?}"
    );
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn sighup_reload_applies_the_difference_and_refuses_an_invalid_file() {
    watchdog(Duration::from_secs(120));
    let prelude = |dir: &Path| {
        format!(
            "[supervisor]\nlog_dir = \"logs\"\n[control]\nsocket = \"{}\"\n",
            dir.join("ctl/h.sock").display()
        )
    };
    let mut host = Host::start(
        "[program.keep]\ncommand = \"sleep 1000\"\nstartsecs = 0\n\
         [program.gone]\ncommand = \"sleep 1000\"\nstartsecs = 0\n\
         [program.change]\ncommand = \"sleep 1000\"\nstartsecs = 0\n",
    );
    host.wait_for("ready:", 1, Duration::from_secs(30));
    let keep_pid = host.spawned_pids("keep:0")[0];
    let cfg: PathBuf = host.path().join("h.toml");
    fs::write(
        &cfg,
        format!(
            "{}[program.keep]\ncommand = \"sleep 1000\"\nstartsecs = 0\n\
             [program.change]\ncommand = \"sleep 999\"\nstartsecs = 0\n\
             [program.added]\ncommand = \"sleep 1000\"\nstartsecs = 0\n",
            prelude(host.path())
        ),
    )
    .unwrap();
    host.signal(libc::SIGHUP);
    host.wait_for("spawned: 'added:0'", 1, Duration::from_secs(30));
    host.wait_for("spawned: 'change:0'", 2, Duration::from_secs(30));
    host.wait_for("stopped: gone:0", 1, Duration::from_secs(30));
    assert_eq!(
        host.spawned_pids("keep:0"),
        vec![keep_pid],
        "unchanged program untouched"
    );
    assert!(alive(keep_pid));

    fs::write(
        &cfg,
        format!(
            "{}[program.keep]\ncommand = \"sleep 1000\"\nstartsecs = -1\n",
            prelude(host.path())
        ),
    )
    .unwrap();
    host.signal(libc::SIGHUP);
    let refused = host.wait_for(
        "reload refused, nothing changed",
        1,
        Duration::from_secs(30),
    );
    assert!(
        refused[0].1.contains("program.keep.startsecs"),
        "{refused:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(host.lines_with("spawned: 'added:0'").len(), 1);
    assert!(
        host.lines_with("stopped: added:0").is_empty(),
        "an invalid config changes nothing"
    );
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn the_host_notifies_ready_watchdog_and_stopping() {
    watchdog(Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut host = Host::start_with(
        "[program.s]\ncommand = \"sleep 1000\"\nstartsecs = 1\n",
        dir,
        &[
            ("NOTIFY_SOCKET", &sock_path),
            ("WATCHDOG_USEC", Path::new("400000")),
        ],
    );
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut recv = |seen: &mut Vec<String>| {
        let n = sock.recv(&mut buf).expect("a notification within 20 s");
        seen.extend(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string),
        );
    };
    while !seen.iter().any(|l| l == "READY=1") {
        recv(&mut seen);
    }
    // READY=1 only once the autostart program is RUNNING (startsecs = 1).
    assert!(
        !host
            .lines_with("success: s:0 entered RUNNING state")
            .is_empty(),
        "READY before RUNNING"
    );
    let watchdogs_before = seen.iter().filter(|l| *l == "WATCHDOG=1").count();
    while seen.iter().filter(|l| *l == "WATCHDOG=1").count() < watchdogs_before + 2 {
        recv(&mut seen);
    }
    host.signal(libc::SIGTERM);
    while !seen.iter().any(|l| l == "STOPPING=1") {
        recv(&mut seen);
    }
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

/// The `slotpool-worker` binary next to `slotpool` (`cargo build --workspace` builds it).
fn worker_bin() -> PathBuf {
    let path = Path::new(BIN).with_file_name("slotpool-worker");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Whether `pid` sleeps in the untimed doorbell wait: `/proc/PID/syscall` shows futex
/// (202 on x86_64), op `FUTEX_WAIT` (0: shared, no bitset) and a null timeout.
#[cfg(target_arch = "x86_64")]
fn in_untimed_futex_wait(pid: i32) -> bool {
    let Ok(line) = fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let f: Vec<&str> = line.split_whitespace().collect();
    f.len() >= 5 && f[0] == "202" && f[2] == "0x0" && f[4] == "0x0"
}

/// A slot worker whose doorbell no cycle rings (a supervisor without an audio engine:
/// nothing ever pushes a block) sleeps without a timeout and beats only when the
/// supervisor's slot tick nudges it, and that keeps it RUNNING, never judged hung,
/// far past its hang_timeout.
#[test]
fn an_idle_slot_worker_sleeps_untimed_and_is_never_declared_hung() {
    use slotpool_host::config::Config;
    use slotpool_host::control::protocol::ProgramState;
    use slotpool_host::supervise::supervisor::Supervisor;

    watchdog(Duration::from_secs(120));
    let dir = tempfile::tempdir().unwrap();
    let hang = Duration::from_millis(100);
    let text = format!(
        "[supervisor]\nlog_dir = \"{}\"\n[program.idle]\nmodule = \"sine\"\nstartsecs = 0\n\
         hang_timeout = \"{}ms\"\n",
        dir.path().join("logs").display(),
        hang.as_millis()
    );
    let config = Config::parse(&text, &dir.path().join("idle.toml")).unwrap();
    let mut sup = Supervisor::new(config, worker_bin(), Instant::now());
    sup.start_autostart(Instant::now());
    // The host loop in miniature: tick, poll the children's fds until the next wake-up.
    let drive = |sup: &mut Supervisor, until: Instant| loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        sup.tick(now);
        let wait = sup
            .next_wake(now)
            .min(until)
            .saturating_duration_since(now)
            .min(Duration::from_millis(10));
        let ready: Vec<_> = {
            let fds = sup.poll_fds();
            let mut pfds: Vec<_> = fds
                .iter()
                .map(|(fd, _)| nix::poll::PollFd::new(*fd, nix::poll::PollFlags::POLLIN))
                .collect();
            let ms = u16::try_from(wait.as_millis()).unwrap_or(10);
            let _ = nix::poll::poll(&mut pfds, nix::poll::PollTimeout::from(ms));
            pfds.iter()
                .zip(&fds)
                .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, (_, t))| *t)
                .collect()
        };
        for t in ready {
            sup.on_ready(t, Instant::now());
        }
    };
    let program = |sup: &Supervisor| {
        sup.status(Instant::now())
            .programs
            .into_iter()
            .find(|p| p.name == "idle:0")
            .expect("the program is in the status")
    };
    let t0 = Instant::now();
    while program(&sup).state != ProgramState::Running {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{:?}",
            program(&sup)
        );
        drive(&mut sup, Instant::now() + Duration::from_millis(10));
    }
    let first = program(&sup);
    let pid = first.pid.expect("a RUNNING worker has a pid") as i32;
    // 30 hang timeouts of idleness, ticking as the host does.
    drive(&mut sup, Instant::now() + hang * 30);
    let p = program(&sup);
    assert_eq!(
        (p.state, p.pid, p.hangs, p.restarts),
        (ProgramState::Running, first.pid, 0, first.restarts),
        "{p:?}"
    );
    // It got there by answering nudges from a sleep without a timeout.
    #[cfg(target_arch = "x86_64")]
    {
        let t0 = Instant::now();
        while !in_untimed_futex_wait(pid) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "pid {pid} never seen in FUTEX_WAIT without a timeout: {:?}",
                fs::read_to_string(format!("/proc/{pid}/syscall"))
            );
            drive(&mut sup, Instant::now() + Duration::from_millis(5));
        }
    }
    // A clean stop: SIGTERM, seen at the nudge that follows it.
    sup.begin_shutdown(Instant::now());
    let t0 = Instant::now();
    while !sup.shutdown_done(Instant::now()) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{:?}",
            program(&sup)
        );
        drive(&mut sup, Instant::now() + Duration::from_millis(10));
    }
    assert!(!alive(pid), "the worker is gone after the shutdown");
    let p = program(&sup);
    assert_eq!(p.state, ProgramState::Stopped, "{p:?}");
}
